"""Files replaced whole or not at all, and one writer at a time."""
from __future__ import annotations

import multiprocessing
import time

import pytest

from ear.storage import locked, read_json, replacing, stamp, write_json


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    write_json(path, {"generation": 1})
    before = stamp(path)
    with pytest.raises(RuntimeError):
        with replacing(path) as fh:
            fh.write(b'{"generation": 2, "half')
            raise RuntimeError("crash mid-write")
    assert read_json(path) == {"generation": 1} and stamp(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    write_json(path, {"generation": 2})
    assert read_json(path) == {"generation": 2} and stamp(path) != before
    assert read_json(tmp_path / "missing.json") is None and stamp(tmp_path / "missing.json") is None


def _hold(path, seconds, started):
    with locked(path):
        started.set()
        time.sleep(seconds)


def test_a_second_writer_waits_for_the_first(tmp_path):
    lock = tmp_path / "lock"
    started = multiprocessing.Event()
    other = multiprocessing.Process(target=_hold, args=(lock, 1.0, started))
    other.start()
    assert started.wait(30)
    begun = time.monotonic()
    with locked(lock):
        waited = time.monotonic() - begun
    other.join()
    assert waited > 0.5
