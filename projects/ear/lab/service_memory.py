"""The memory of a real Gunicorn serving a catalog, idle and after queries (`ear eval`'s last
table). Run as its own process (`python -m ear.lab.service_memory DATA_DIR COUNT FILES.json
GUNICORN_CONF`), which imports neither torch nor numpy: pages of their libraries that the
measuring process also mapped would count as shared, not as the service's own.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def serving(conf: Path, env: dict[str, str], *extra: str) -> Iterator[tuple[str, int, int]]:
    """A real Gunicorn, started as production does (with the settings in `conf`, and `env`
    over this process's), on a free port: (its URL, the master's pid, the worker's pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf), *extra],
                            env={**os.environ, **env, "EAR_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        worker = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        yield url, proc.pid, worker
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def ear_worker(env: dict[str, str], log: Path, linger_s: float = 600.0) -> Iterator[subprocess.Popen]:
    """`ear worker` on the catalog in `env` (this process's over), as Supervisor starts it, its
    output in `log`: given once it waits for jobs; stopped with SIGTERM after (its child gives
    back a job in hand), unless stopped already. Its child lingers `linger_s` after the last job
    (EAR_WORKER_LINGER_S, whatever .env says), so that it can be measured after its jobs."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ear.cli", "worker"],
                                env={**os.environ, **env, "EAR_WORKER_LINGER_S": str(linger_s)},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):
            if "waiting for jobs" in log.read_text():
                break
            if proc.poll() is not None:
                raise SystemExit(f"ear worker exited ({proc.returncode}): see {log}")
            time.sleep(0.1)
        else:
            raise SystemExit(f"ear worker did not start in 120 s: see {log}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def add_gunicorn_conf_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gunicorn-conf", default="deploy/gunicorn.conf.py",
                        help="Gunicorn settings the service runs with (default: %(default)s)")


def exec_without_torch(module: str, args: argparse.Namespace) -> None:
    """Become `python -m MODULE` with the same options, unless this process has never imported
    torch or numpy: pages of their libraries that the measuring process also mapped would count
    as shared, not as the service's own."""
    if "torch" in sys.modules or "numpy" in sys.modules:
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", module, *argv])


def service_memory(data_dir: Path, files: list[str], count: int, conf: Path) -> str:
    """Start Gunicorn on the eval catalog as production does (with the settings in `conf`),
    and read the memory of its master and worker from /proc/PID/smaps_rollup, idle and after
    `count` queries (the query files in turn; every fourth one to /similar, the others to
    /identify)."""
    with serving(conf, {"EAR_DATA_DIR": str(data_dir.resolve())}) as (url, master, worker):
        idle = {name: _smaps(pid) for name, pid in (("master", master), ("worker", worker))}
        for i in range(count):
            route = "/similar" if i % 4 == 3 else "/identify"
            request = urllib.request.Request(url + route, data=Path(files[i % len(files)]).read_bytes(),
                                             method="POST")
            urllib.request.urlopen(request, timeout=120).read()
        busy = {name: _smaps(pid) for name, pid in (("master", master), ("worker", worker))}
    lines = ["service memory (MB, /proc/PID/smaps_rollup; private = Private_Clean + Private_Dirty):",
             f"{'':26} {'private':>8} {'anon':>7} {'Pss':>7} {'Rss':>7}"]
    for label, snap in (("idle", idle), (f"after {count} queries", busy)):
        for name in ("master", "worker"):
            m = snap[name]
            lines.append(f"{label + ' ' + name:26} {(m['Private_Clean'] + m['Private_Dirty']) / 1024:8.1f} "
                         f"{m['Anonymous'] / 1024:7.1f} {m['Pss'] / 1024:7.1f} {m['Rss'] / 1024:7.1f}")
        total = sum(snap[n]["Private_Clean"] + snap[n]["Private_Dirty"] for n in snap) / 1024
        lines.append(f"{label + ' total':26} {total:8.1f}")
    return "\n".join(lines)


def _smaps(pid: int, with_children: bool = False) -> dict[str, int]:
    """/proc/PID/smaps_rollup's figures (kB); `with_children`: summed over the process and its
    children (`ear worker` and the child that does its jobs, standby.py)."""
    out: dict[str, int] = {}
    for one in [pid, *(children(pid) if with_children else [])]:
        for line in _proc(one, "smaps_rollup").splitlines()[1:]:
            key, _, value = line.partition(":")
            out[key.strip()] = out.get(key.strip(), 0) + int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    return [int(c) for c in _proc(pid, f"task/{pid}/children").split()]


def _proc(pid: int, name: str) -> str:
    """/proc/PID/NAME's text; empty if the process has just ended (a child going)."""
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def main() -> int:
    data_dir, count, listing, conf = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    print(service_memory(data_dir, json.loads(listing.read_text()), count, conf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
