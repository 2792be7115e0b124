"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster made with
`initdb` in a temporary folder and started with `pg_ctl` as an unprivileged user (PostgreSQL
refuses to run as root), reached over a Unix socket in that folder; a fresh database per test."""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2

USER = "ear"  # the database role initdb makes


class PostgresServer:
    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        assert found, "PostgreSQL is missing: apt-get install postgresql (deploy/dev.sh test does)"
        self.bin = Path(found[-1]).parent
        self.run_as = _unprivileged()
        self.folder = Path(tempfile.mkdtemp(prefix="ear-pg-"))
        if self.run_as is not None:
            os.chown(self.folder, self.run_as.pw_uid, self.run_as.pw_gid)
        self.data = self.folder / "data"
        self._names = itertools.count(1)
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "start", "-o",
                  f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=200")

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"ear_{next(self._names)}"
        conn = psycopg2.connect(dbname="postgres", user=USER, host=str(self.folder))
        try:
            conn.autocommit = True  # CREATE DATABASE runs outside a transaction
            conn.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return f"postgresql://{USER}@/{name}?host={self.folder}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bin / program), *args], check=True, capture_output=True,
                       user=self.run_as.pw_uid if self.run_as else None,
                       group=self.run_as.pw_gid if self.run_as else None)


def _unprivileged() -> pwd.struct_passwd | None:
    """Who runs the server: this user, or when that is root, Debian's `postgres` (or nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise AssertionError("no unprivileged user to run PostgreSQL as")
