"""The service under the real Gunicorn, started from deploy/gunicorn.conf.py: torch's thread
limit as a served request sees it, answers while the CLI writes to the same catalog, and
similar-track queries while `ear worker` adds uploads and rebuilds the index."""
from __future__ import annotations

import struct
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg2
import requests
from helpers import AUTH, WORKER_APP_NAME, job_done, start_gunicorn
from synth import encode, song, write


def _upload(server, path, **fields) -> dict:
    """The upload's job, ended by the `ear worker` beside Gunicorn."""
    with open(path, "rb") as fh:
        return job_done(server.url, requests.post(server.url + "/tracks", files={"audio": (path.name, fh)},
                                                  data=fields, headers=AUTH, timeout=60))


def test_a_served_request_runs_with_the_configured_torch_threads(tmp_path):
    gen = start_gunicorn(tmp_path, EAR_TORCH_THREADS="3")
    server = next(gen)
    try:
        # The master loads the model on one thread; the limit is set in the worker after the
        # fork, and /health reads it inside the request.
        assert requests.get(server.url + "/health", timeout=10).json()["torch_threads"] == 3
    finally:
        next(gen, None)


def test_an_upload_over_the_limit_gets_a_json_413_from_the_app(gunicorn_server):
    # Straight to Gunicorn (behind Nginx, Nginx answers it first: test_nginx).
    r = requests.post(gunicorn_server.url + "/identify", data=b"\0" * (51 * 1024 * 1024), timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
    assert requests.get(gunicorn_server.url + "/health", timeout=10).json()["status"] == "ok"


def test_a_job_is_answered_while_a_query_computes(gunicorn_server, songs_dir, tmp_path):
    """The worker's second thread (deploy/gunicorn.conf.py): an uploader polling its job is not
    held behind visitors' queries; with one thread no poll could end while a query runs."""
    job = _upload(gunicorn_server, songs_dir / "song1.flac")
    noisy = np.random.default_rng(3).standard_normal((30 * 44100, 1)) * 0.1 + song(1)[:30 * 44100, :1]
    query = write(tmp_path / "noisy.wav", noisy.astype(np.float32)).read_bytes()
    queries: list[tuple[float, float]] = []

    def identify() -> None:
        for _ in range(3):
            began = time.monotonic()
            requests.post(gunicorn_server.url + "/identify", data=query, timeout=60).raise_for_status()
            queries.append((began, time.monotonic()))

    thread = threading.Thread(target=identify)
    thread.start()
    polls = []
    while thread.is_alive():
        began = time.monotonic()
        requests.get(f"{gunicorn_server.url}/jobs/{job['id']}", headers=AUTH, timeout=60).raise_for_status()
        polls.append((began, time.monotonic()))
    thread.join()
    during = [p for p in polls if any(q0 < p[0] and p[1] < q1 for q0, q1 in queries)]
    print(f"{len(during)} of {len(polls)} polls answered inside a query; queries took "
          f"{[round(q1 - q0, 2) for q0, q1 in queries]} s")
    assert during


def test_the_workers_threads_share_one_heap(gunicorn_server, songs_dir, tmp_path):
    """deploy/gunicorn.conf.py's post_fork (runtime.one_heap): glibc gives each thread that
    allocates an arena of its own, a 64 MB reservation whose unused part shows in the worker's
    maps as an anonymous ---p region of megabytes; with one arena there is none."""
    _upload(gunicorn_server, songs_dir / "song2.flac")
    query = write(tmp_path / "q.wav", song(2)[9 * 44100: 17 * 44100]).read_bytes()

    def ask(n: int) -> None:
        for _ in range(n):
            requests.post(gunicorn_server.url + "/identify", data=query, timeout=60).raise_for_status()

    threads = [threading.Thread(target=ask, args=(4,)) for _ in range(2)]  # both threads busy
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    master = gunicorn_server.proc.pid
    worker = int(open(f"/proc/{master}/task/{master}/children").read().split()[0])
    reserved = []
    for line in open(f"/proc/{worker}/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if fields[1] == "---p" and len(fields) == 5 and end - start >= 1 << 20:
            reserved.append((end - start) >> 20)
    assert reserved == [], reserved  # MB reserved by arenas of their own


def _chunked_wav(seconds: float, multipart: bool):
    """A WAV file sent in chunks (no Content-Length), as a client streaming it would."""
    audio = (song(3, seconds=10.0)[:, 0] * 32767).astype("<i2").tobytes()
    size = int(seconds * 44100) * 2
    header = (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 44100, 88200, 2, 16) + b"data" + struct.pack("<I", size))
    if multipart:
        yield b'--B\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    yield header
    for start in range(0, size, len(audio)):
        yield audio[: size - start]
    if multipart:
        yield b"\r\n--B--\r\n"


def test_a_chunked_upload_past_the_limit_is_refused_whole(gunicorn_server):
    url = gunicorn_server.url
    for multipart in (False, True):
        kind = "multipart/form-data; boundary=B" if multipart else "audio/wav"
        r = requests.post(url + "/tracks", data=_chunked_wav(600, multipart), timeout=120,
                          headers={**AUTH, "Content-Type": kind})  # 53 MB: over the 50 MB
        assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large", r.text
        assert requests.get(url + "/tracks", timeout=10).json()["tracks"] == []
        assert [p for p in (gunicorn_server.data_dir / "originals").rglob("*") if p.is_file()] == []
    r = requests.post(url + "/tracks", data=_chunked_wav(20, False), timeout=120,
                      headers={**AUTH, "Content-Type": "audio/wav"})
    assert abs(job_done(url, r)["track"]["duration"] - 20.0) < 0.1


def test_identify_keeps_answering_while_the_cli_ingests(gunicorn_server, songs_dir, tmp_path):
    server = gunicorn_server
    assert _upload(server, songs_dir / "song4.flac")["status"] == "done"
    query = write(tmp_path / "q.wav", song(4)[44100 * 5: 44100 * 11]).read_bytes()
    ingest = subprocess.Popen([sys.executable, "-m", "ear.cli", "--data-dir", str(server.data_dir),
                               "ingest", str(songs_dir)], stdout=subprocess.PIPE, text=True)
    answers = []

    def ask():
        while ingest.poll() is None or len(answers) < 5:
            answers.append(requests.post(server.url + "/identify", data=query, timeout=60))

    asker = threading.Thread(target=ask)
    asker.start()
    out, _ = ingest.communicate(timeout=300)
    asker.join(timeout=120)
    assert ingest.returncode == 0 and out.count("added") == 5
    assert answers and all(a.status_code == 200 for a in answers)
    assert all(a.json()["matches"][0]["track"]["title"] == "song4" for a in answers)
    assert requests.get(server.url + "/health", timeout=10).json()["tracks"] == 6


def test_similar_answers_while_uploads_rebuild_the_index(gunicorn_server, songs_dir, tmp_path):
    server = gunicorn_server
    for i in range(3):
        assert _upload(server, songs_dir / f"song{i}.flac")["status"] == "done"
    query = encode(write(tmp_path / "q.wav", song(1)[44100 * 4: 44100 * 12]),
                   tmp_path / "q.webm", "-c:a", "libopus", "-b:a", "32k").read_bytes()
    failures, answered, stop = [], [], threading.Event()

    def ask():
        while not stop.is_set():
            r = requests.post(server.url + "/similar", files={"audio": query}, timeout=60)
            (answered if r.status_code == 200 else failures).append(r.text)

    asker = threading.Thread(target=ask)
    asker.start()
    for i in range(3, 6):  # each add rebuilds the index (in `ear worker`)
        assert _upload(server, songs_dir / f"song{i}.flac")["status"] == "done"
    stop.set()
    asker.join()
    assert answered and not failures
    body = requests.post(server.url + "/similar?k=5", files={"audio": query}, timeout=60).json()
    assert body["identified"]["track"]["title"] == "song1" and len(body["matches"]) == 5


def test_the_service_on_postgresql(postgres_server, songs_dir, tmp_path):
    """EAR_DATABASE_URL=postgresql://...: Gunicorn's master forks holding no connection of its
    pool (pre_fork closes them), and uploads, jobs, the worker and queries all run on it."""
    url = postgres_server.new_database()
    gen = start_gunicorn(tmp_path, ask=False, EAR_DATABASE_URL=url)
    server = next(gen)
    try:
        time.sleep(0.5)  # the worker has booted and answered nothing yet
        assert _connections(url, but=WORKER_APP_NAME) == 0  # the master's start-up left none to inherit
        job = _upload(server, songs_dir / "song2.flac")
        assert job["status"] == "done" and _connections(url) >= 1
        clip = write(tmp_path / "q.wav", song(2)[44100 * 5: 44100 * 12]).read_bytes()
        answer = requests.post(server.url + "/identify", data=clip, timeout=60).json()
        assert answer["matches"][0]["track"]["id"] == job["track"]["id"]
    finally:
        next(gen, None)
    assert not (server.data_dir / "ear.sqlite3").exists()


def _connections(url: str, but: str | None = None) -> int:
    """How many connections the database at `url` has (this one's not counted, nor those of
    the application named `but`: `ear worker`'s, which waits on the queue from its start)."""
    with psycopg2.connect(url.replace("postgresql://", "postgres://", 1)) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s", (but,))
        return cursor.fetchone()[0]
