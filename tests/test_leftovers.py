"""What a process killed mid-write leaves behind is put right when the service starts, and a
data folder the service may not write is one line that says how to fix it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, free_port

from ear.app import create_app
from ear.errors import EarError
from ear.runtime import in_a_child
from ear.ids import track_ids
from ear.segments import pack
from ear.storage import locked


def test_the_service_starts_by_sweeping_leftovers_and_orphans(filled_catalog, config):
    table, index = filled_catalog.library().table, filled_catalog.library().index
    with table.writing():  # a track whose row was never written: the process died first
        (orphan,) = track_ids(1)
        table.add({orphan: (pack(np.arange(50, dtype=np.uint32), orphan, np.arange(50)), np.zeros(5, np.uint16))})
    leftovers = [config.embedding_dir / "pending-0123456789ab.npz", config.embedding_dir / "windows-9.ann.tmp",
                 config.embedding_dir / "manifest.json.tmp", config.fingerprint_dir / "manifest.json.tmp",
                 config.fingerprint_dir / "seg-00000099.bin.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    # While another process adds to or rebuilds the index, its files are not touched; while
    # another writer holds the table, the orphan stays (and /health counts what SQLite knows).
    for lock in (".write.lock", ".build.lock"):
        with locked(config.embedding_dir / lock):
            _in_another_process(index.sweep)
        assert all(path.exists() for path in leftovers[:3]), lock
    with locked(config.fingerprint_dir / "lock"):
        client = create_app(config).test_client()
    table.refresh()
    assert orphan in table.track_ids() and client.get("/health").get_json()["tracks"] == 6

    create_app(config)
    assert not [path for path in leftovers if path.exists()]
    table.refresh()
    assert orphan not in table.track_ids()
    assert len(filled_catalog.tracks()) == 6


def test_a_data_folder_restored_without_its_fingerprints_is_not_emptied(filled_catalog, config):
    shutil.rmtree(config.fingerprint_dir)
    started = subprocess.run([sys.executable, "-c", "from ear.app import create_app; from ear.config "
                              f"import load_config; create_app(load_config(data_dir={str(config.data_dir)!r}))"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    assert "has no manifest but the database lists 6 tracks" in started.stderr  # the owner is told
    assert len(filled_catalog.tracks()) == 6


def _in_another_process(work) -> None:
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest, whatever happens
        status = 1
        try:
            work()
            status = 0
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the service as another user: CI runs as root")
def test_a_data_folder_the_service_may_not_write_is_one_line():
    # Under /tmp (pytest's own folders are closed to other users), owned by root, 0755.
    data = Path(tempfile.mkdtemp(prefix="ear-root-owned-"))
    data.chmod(0o755)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    env = {**os.environ, "EAR_DATA_DIR": str(data), "EAR_PORT": str(free_port())}
    cli = subprocess.run([*as_nobody, sys.executable, "-m", "ear.cli", "tracks"], env=env, cwd="/",
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and cli.stderr.strip().splitlines() == [
        f"ear: {data} cannot be written as user nobody: set EAR_DATA_DIR to a folder this user may "
        "write, or give it this one (chown)."]
    served = subprocess.run([*as_nobody, sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy/gunicorn.conf.py")],
                            env=env, cwd="/", capture_output=True, text=True, timeout=120)
    assert served.returncode != 0 and "Traceback" not in served.stderr + served.stdout
    assert f"ear: {data} cannot be written as user nobody" in served.stderr + served.stdout
    data.rmdir()


def test_a_start_up_step_that_fails_in_its_child_stops_the_start(capfd):
    """runtime.in_a_child (the start's look at every library): the parent says it failed."""
    def tidy() -> None:
        raise OSError("the disk went away")

    with pytest.raises(EarError) as stopped:
        in_a_child(tidy)
    assert stopped.value.code == "start_failed" and "tidy failed" in stopped.value.message
    assert "the disk went away" in capfd.readouterr().err  # the child's traceback, for the log
