"""Files that are never seen half-written, the manifests that name them, and the writers' lock.

A file is written beside its final name (`NAME.tmp`), fsynced, renamed over the old one, and
then the directory is fsynced, so that after a crash the name holds either the old bytes or the
new ones, and the rename itself survives. Readers notice a replaced manifest by its stamp (inode,
mtime, size): one stat, no read, when nothing changed. Writers of one store take an flock.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import EarError

Stamp = tuple[int, int, int]


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """Write `path` whole or not at all: yields the temporary file to write into; when the
    block ends without an exception the file becomes `path`, durably (see `commit`)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit(tmp: Path, path: Path) -> None:
    """Make a file written elsewhere (by another library) `path`: fsync it, rename it, fsync
    the directory so that the rename survives a crash."""
    _fsync(tmp, os.O_RDONLY)
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that what was just created or renamed in it survives a crash."""
    _fsync(folder, os.O_RDONLY)


def write_json(path: Path, data: dict) -> None:
    with replacing(path) as fh:
        fh.write(json.dumps(data, separators=(",", ":")).encode())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def stamp(path: Path) -> Stamp | None:
    """What changes whenever the file is replaced (None: there is no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if missing) for the block: one writer at a
    time, across processes; the kernel drops it if the process dies. Yields whether it is held:
    always, when waiting for it; with `wait=False`, only if no one else held it."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_writable(folder: Path) -> None:
    """Create `folder` if need be; refuse, in one sentence that says how to fix it, a folder
    this process cannot write (a service started as another user than the one owning it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        raise EarError("data_dir_unwritable", f"{folder} cannot be written as user "
                       f"{getpass.getuser()}: set EAR_DATA_DIR to a folder this user may write, "
                       "or give it this one (chown).", 500)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
