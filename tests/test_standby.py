"""`ear worker` as Supervisor runs it (standby.py): the process that waits holds no torch; a
child does the jobs and goes when the queue has been empty EAR_WORKER_LINGER_S; a child killed
on its own (the OOM killer's choice) gives its job back, and one whose parent was killed dies
with it, so that a restarted worker of the same name takes over at once; a child that cannot
start stops the worker, and the jobs wait untried."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import AUTH, noise_opus

from ear import jobs
from ear.lab.service_memory import children

pytestmark = pytest.mark.postgresql
LINGER_S = 2


def _holds_torch(pid: int) -> bool:
    return "/torch/lib/" in Path(f"/proc/{pid}/maps").read_text()


def _private_mb(pid: int) -> float:
    rows = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return sum(int(r.split()[1]) for r in rows if r.startswith(("Private_Clean", "Private_Dirty"))) / 1024


def _until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)
    return found


class _Worker:
    """`ear worker` in a process of its own, on the test's catalog and database."""

    def __init__(self, config, log: Path) -> None:
        env = {**os.environ, "EAR_DATA_DIR": str(config.data_dir), "EAR_DATABASE_URL": config.database_url,
               "EAR_WORKER_NAME": "standby", "EAR_WORKER_LINGER_S": str(LINGER_S)}
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "ear.cli", "worker"], env=env,
                                     stdout=log.open("a"), stderr=subprocess.STDOUT)
        _until(lambda: "waiting for jobs" in log.read_text() or self.proc.poll() is not None, 60,
               "the worker waiting")
        assert self.proc.poll() is None, log.read_text()

    def child(self) -> int:
        return _until(lambda: children(self.proc.pid), 30, "a child doing the job")[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=60)




def _upload(client, data: bytes) -> int:
    answer = client.post("/tracks", data=data, headers=AUTH)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["job"]["id"]


def _ended(job_id: int, timeout_s: float = 120):
    return _until(lambda: (job := jobs.get(job_id)).status in ("done", "failed") and job, timeout_s,
                  f"job {job_id} ended")


def _running(job_id: int) -> None:
    _until(lambda: (job := jobs.get(job_id)) and job.status == "running" and job.progress > 0, 60,
           f"job {job_id} under way")


def test_the_waiting_worker_holds_no_torch_and_the_child_goes_after_the_jobs(client, config, tmp_path):
    worker = _Worker(config, tmp_path / "worker.log")
    try:
        assert not _holds_torch(worker.proc.pid)
        waiting_mb = _private_mb(worker.proc.pid)
        for seed in (1, 2):  # the second job comes after the first child went: a new one does it
            job_id = _upload(client, noise_opus(tmp_path, seed, 30))
            child = worker.child()
            assert _ended(job_id).status == "done"
            assert _holds_torch(child) and children(worker.proc.pid) == [child]  # lingering
            working_mb = _private_mb(child)
            _until(lambda: not children(worker.proc.pid), LINGER_S + 30, "the child gone")
            assert not _holds_torch(worker.proc.pid)
        print(f"\nprivate MB: waiting {waiting_mb:.1f}, its child after a job {working_mb:.1f}, "
              f"waiting again {_private_mb(worker.proc.pid):.1f}")
        assert len(client.get("/tracks").get_json()["tracks"]) == 2
    finally:
        worker.stop()


def test_a_child_killed_alone_gives_its_job_back(client, config, tmp_path):
    worker = _Worker(config, tmp_path / "worker.log")
    try:
        job_id = _upload(client, noise_opus(tmp_path, 3, 1200))
        _running(job_id)
        os.kill(worker.child(), signal.SIGKILL)
        job = _ended(job_id, timeout_s=240)
        assert (job.status, job.attempts) == ("done", 2), job.to_json()
    finally:
        worker.stop()
    assert "its job goes back to the queue" in (tmp_path / "worker.log").read_text()


def test_a_child_dies_with_its_worker_and_the_restarted_worker_takes_over(client, config, tmp_path):
    first = _Worker(config, tmp_path / "worker.log")
    job_id = _upload(client, noise_opus(tmp_path, 4, 1200))
    _running(job_id)
    child = first.child()
    first.proc.kill()  # the parent alone, as `kill -9 PID` would
    first.proc.wait(timeout=10)
    _until(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
           10, "the child gone with its parent")
    second = _Worker(config, tmp_path / "worker.log")  # the same name: its lock is free
    try:
        job = _ended(job_id, timeout_s=240)
        assert (job.status, job.attempts) == ("done", 2), job.to_json()
    finally:
        second.stop()


def test_a_child_that_cannot_start_stops_the_worker_and_leaves_the_jobs_queued(client, config, tmp_path):
    """The data folder turned into another catalog's after the worker started: the child that
    would do the job refuses to open it. The worker exits non-zero (Supervisor says so), and
    the job has not been tried."""
    worker = _Worker(config, tmp_path / "worker.log")
    (config.data_dir / "catalog-id").write_text("another catalog\n")
    job_id = _upload(client, noise_opus(tmp_path, 5, 10))
    assert worker.proc.wait(timeout=60) != 0
    log = (tmp_path / "worker.log").read_text()
    assert "database_mismatch" in log or "not this database's catalog" in log, log
    assert "the jobs stay queued" in log, log
    job = jobs.get(job_id)
    assert (job.status, job.attempts) == ("queued", 0), job.to_json()
