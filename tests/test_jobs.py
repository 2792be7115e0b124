"""The queue and `ear worker`: uploads answered 202 and added by the worker, in order, once;
what a dead worker held queued again, and failed after MAX_ATTEMPTS; a stopping worker gives
its job back; a track and its job's end are one commit; the job routes and `ear jobs`."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from helpers import AUTH, added, noise_opus, run_ear, work


from ear import jobs
from ear.db import Job, database
from ear.models import shipped_model
from ear.errors import EarError
from ear.standby import Standby
from ear.storage import locked
from ear.worker import Worker

pytestmark = pytest.mark.postgresql
N_UPLOADS = 6


def _age(job_id: int, seconds: float) -> None:
    """Make a running job's last heartbeat `seconds` old (as if its worker had died then)."""
    with database.connection_context():
        Job.update(heartbeat=jobs.now() - dt.timedelta(seconds=seconds)).where(Job.id == job_id).execute()


def test_jobs_are_claimed_oldest_first_and_once(catalog):
    first, second = (jobs.queue_ingest(f"{n:064x}.flac", f"s{n}", {}) for n in (1, 2))
    jobs.queue_reindex()
    jobs.queue_reindex()  # one queued rebuild is enough
    claimed = [jobs.claim("a"), jobs.claim("b"), jobs.claim("c"), jobs.claim("d")]
    assert [(j.id, j.kind) for j in claimed[:2]] == [(first.id, "ingest"), (second.id, "ingest")]
    assert claimed[2].kind == "reindex" and claimed[2].id not in (first.id, second.id)
    assert claimed[3] is None
    assert jobs.counts() == {"queued": 0, "running": 3}


def test_a_dead_workers_job_is_queued_again_then_failed_after_max_attempts(catalog):
    job = jobs.queue_ingest("a" * 64, "s", {})
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        assert jobs.claim("w1").id == job.id
        _age(job.id, jobs.STALE_AFTER_S - 5)
        assert jobs.claim("w2") is None  # beating recently enough: still its worker's
        _age(job.id, jobs.STALE_AFTER_S + 1)
    assert jobs.claim("w2") is None
    ended = jobs.get(job.id)
    assert (ended.status, ended.error_code, ended.attempts) == ("failed", "worker_died", jobs.MAX_ATTEMPTS)


def test_a_worker_that_comes_back_cannot_end_a_job_taken_over(catalog):
    job = jobs.queue_ingest("e" * 64, "s", {})
    stalled = jobs.claim("stalled")
    _age(job.id, jobs.STALE_AFTER_S + 1)
    taker = jobs.claim("taker")
    assert taker.id == job.id
    for end in (lambda: jobs.finish(stalled, 1), lambda: jobs.fail(stalled, "x", "y")):
        with pytest.raises(jobs.TakenOver):
            end()
    jobs.give_back(stalled)
    assert (jobs.get(job.id).status, jobs.get(job.id).worker) == ("running", "taker")
    jobs.finish(taker, 1)
    assert jobs.get(job.id).status == "done"


def test_a_restarted_worker_takes_up_its_own_job_at_once(catalog):
    job = jobs.queue_ingest("b" * 64, "s", {})
    assert jobs.claim("here").id == job.id  # then the worker is killed: its beat is fresh
    jobs.requeue_own("elsewhere")
    assert jobs.get(job.id).status == "running"
    jobs.requeue_own("here")
    assert jobs.claim("here").id == job.id and jobs.get(job.id).attempts == 2


def test_uploads_are_added_by_the_worker_with_their_outcome(client, app, songs_dir):
    with open(songs_dir / "song0.flac", "rb") as a, open(songs_dir / "song1.flac", "rb") as b:
        answer = client.post("/tracks", data={"audio": [(a, "song0.flac"), (b, "song1.flac")], "artist": "Ann"},
                             headers=AUTH)
    assert answer.status_code == 202 and answer.headers["Location"] == answer.get_json()["job"]["url"]
    queued = answer.get_json()["jobs"]
    assert [(j["status"], j["source"]) for j in queued] == [("queued", "song0.flac"), ("queued", "song1.flac")]
    assert client.get("/tracks").get_json()["tracks"] == []  # nothing searchable before the worker
    assert client.get("/health", headers=AUTH).get_json()["jobs"] == {"queued": 2, "running": 0}
    assert "jobs" not in client.get("/health").get_json()  # the owner's business
    assert work(app) == 3  # two tracks and one rebuild of the index
    listed = client.get("/jobs", headers=AUTH).get_json()["jobs"]
    assert [(j["kind"], j["status"]) for j in listed] == [("reindex", "done"), ("ingest", "done"), ("ingest", "done")]
    assert [j["track"]["artist"] for j in listed[1:]] == ["Ann", "Ann"] and listed[1]["progress"] == 1.0
    assert app.extensions["ear"].library().index.needs_rebuild() is False


def test_a_job_that_fails_says_why_and_keeps_nothing(client, catalog, songs_dir):
    job = added(client, {"audio": (io.BytesIO(b"\0" * 4000), "zeros.wav")})
    assert job["status"] == "failed" and job["error"]["code"] == "not_audio", job
    done = added(client, {"audio": (io.BytesIO((songs_dir / "song2.flac").read_bytes()), "a.flac")})
    again = added(client, {"audio": (io.BytesIO((songs_dir / "song2.flac").read_bytes()), "b.flac")})
    assert again["error"]["code"] == "duplicate" and again["track"]["id"] == done["track"]["id"]
    kept = [p.name for p in catalog.config.originals_dir.rglob("*") if p.is_file()]
    assert kept == [hashlib.sha256((songs_dir / "song2.flac").read_bytes()).hexdigest() + ".flac"]


def test_a_stopping_worker_gives_its_job_back(app, client, tmp_path):
    answer = client.post("/tracks", data=noise_opus(tmp_path, 7, 600), headers=AUTH)
    job_id = answer.get_json()["job"]["id"]
    worker = Worker(app.extensions["ear"], "stopping")
    threading.Timer(0.5, worker.stop).start()
    assert worker.run() == 0
    job = jobs.get(job_id)
    assert job.started_at is not None  # it was running when the worker was told to stop
    assert (job.status, job.attempts, job.progress) == ("queued", 0, 0.0)
    assert app.extensions["ear"].originals.path(job.original).is_file()
    assert work(app) == 2 and jobs.get(job_id).status == "done"


def test_two_workers_of_one_name_cannot_run(catalog):
    with locked(catalog.config.data_dir / "worker-twin.lock"):
        with pytest.raises(EarError) as refused:
            Standby(replace(catalog.config, worker_name="twin")).run(until_idle=True)
    assert refused.value.code == "worker_running"


def test_a_track_and_its_jobs_end_are_one_commit(catalog, songs_dir):
    """What the worker writes when a track is made fails: no row, and the landmarks already
    stored are orphans the next reconcile removes."""
    prepared = catalog.prepare_file(songs_dir / "song3.flac", {}, shipped_model())

    def then(stored):
        raise OSError("the disk went away")

    with pytest.raises(OSError):
        catalog.store([prepared], then=then)
    assert catalog.tracks() == []
    catalog.reconcile()
    assert catalog.library().table.track_ids() == set()


def test_job_routes_are_the_admins(client):
    assert client.get("/jobs").status_code == 401
    for job_id in (1, 2**63, 2**70):
        r = client.get(f"/jobs/{job_id}", headers=AUTH)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found"
    for n in ("abc", "0", "101"):
        r = client.get("/jobs", query_string={"n": n}, headers=AUTH)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_parameter"


def test_a_worker_name_that_cannot_name_its_lock_is_refused(config):
    with pytest.raises(EarError) as refused:
        Standby(replace(config, worker_name="../elsewhere"))
    assert refused.value.code == "bad_worker_name"


def test_ear_worker_and_ear_jobs(client, config, songs_dir):
    with open(songs_dir / "song4.flac", "rb") as fh:
        assert client.post("/tracks", data={"audio": fh}, headers=AUTH).status_code == 202
    database = {"database_url": config.database_url}
    assert "queued" in run_ear(config.data_dir, "jobs", **database).stdout
    run_ear(config.data_dir, "worker", "--until-idle", **database)
    lines = run_ear(config.data_dir, "jobs", **database).stdout.splitlines()
    assert [line.split("\t")[1:4] for line in lines] == [["owner", "reindex", "done "], ["owner", "ingest", "done "]]
    assert lines[1].endswith(f"track {client.get('/tracks').get_json()['tracks'][0]['id']}")


def test_two_workers_share_the_queue_and_take_each_job_once(client, config, tmp_path):
    """Two `ear worker` processes at once (on PostgreSQL: FOR UPDATE SKIP LOCKED), both ready
    before the uploads come all at once, each a second or more of work: within its next look
    (a second) the second worker finds one the first has not taken."""
    env = {**os.environ, "EAR_DATA_DIR": str(config.data_dir), "EAR_DATABASE_URL": config.database_url}
    workers = [subprocess.Popen([sys.executable, "-m", "ear.cli", "worker"], text=True,
                                env={**env, "EAR_WORKER_NAME": name}, stderr=subprocess.PIPE)
               for name in ("left", "right")]
    uploads = [noise_opus(tmp_path, seed, 180) for seed in range(N_UPLOADS)]
    try:
        for worker in workers:
            assert "waiting for jobs" in worker.stderr.readline()
        for upload in uploads:  # queued at once: the first worker to look cannot take them all
            assert client.post("/tracks", data=upload, headers=AUTH).status_code == 202
        deadline = time.monotonic() + 240
        while jobs.counts() != {"queued": 0, "running": 0} and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.terminate()
    logs = [w.communicate(timeout=60)[1] for w in workers]
    ended = jobs.recent()
    ingests = [j for j in ended if j.kind == "ingest"]
    assert [j.status for j in ended] == ["done"] * len(ended), logs
    assert len(ingests) == len({j.track_id for j in ingests}) == N_UPLOADS  # each job once
    assert {j.track_id for j in ingests} == {t["id"] for t in client.get("/tracks").get_json()["tracks"]}
    assert all(j.attempts == 1 for j in ingests)
    assert {j.worker for j in ingests} == {"left", "right"}, logs  # both had work
