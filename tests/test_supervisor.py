"""The shipped `supervisor/ear_service.conf` under a real supervisord (PyPI): restart, a request
in flight through a restart, a SIGKILLed Gunicorn master, and `ear worker` killed (alone, with
Gunicorn, with everything) in the middle of its jobs: no accepted upload is lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import AUTH, REPO, free_port, job_done, job_ended
from synth import song, write

from ear.catalog import Catalog
from ear.config import load_config

BIN = Path(sys.executable).parent


class Supervised:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        srv = root / "srv"
        srv.mkdir()
        # The service reads its settings from .env in its working directory, as in production.
        (srv / ".env").write_text(f"EAR_DATA_DIR={srv / 'data'}\nEAR_PORT={self.port}\n"
                                  "EAR_ADMIN_TOKEN=test-token\n")
        program = (REPO / "supervisor/ear_service.conf").read_text()
        program = (program.replace("/srv/ear/.venv/bin/gunicorn", str(BIN / "gunicorn"))
                   .replace("/srv/ear/.venv/bin/ear", str(BIN / "ear"))
                   .replace("/srv/ear/deploy/", f"{REPO}/deploy/")
                   .replace("directory=/srv/ear", f"directory={srv}")
                   .replace("/var/log/ear/", f"{root}/")
                   .replace("user=ear", f"user={os.environ.get('USER') or 'root'}"
                            if os.geteuid() == 0 else ";user=ear"))
        assert not [line for line in program.splitlines()
                    if "/srv/ear" in line and not line.startswith(";")]
        (root / "ear_service.conf").write_text(program)
        self.conf = root / "supervisord.conf"
        self.conf.write_text(f"""
[unix_http_server]
file={root}/supervisor.sock
[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{root}/supervisor.sock
[include]
files = {root}/ear_service.conf
""")
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)])
        self.wait_healthy(60)

    def pid(self, program: str) -> int:
        out = self.ctl("pid", program).strip()
        return int(out) if out.isdigit() else 0

    def kill(self, program: str) -> None:
        """SIGKILL to the program's process group (Supervisor gives each its own): Gunicorn's
        master and worker, or `ear worker` and its FFmpeg."""
        os.killpg(self.pid(program), signal.SIGKILL)

    def crash(self) -> None:
        """As if the machine stopped: every process killed at once, supervisord too."""
        groups = [self.pid("ear"), self.pid("ear-worker")]
        self.proc.kill()
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def ctl(self, *args: str) -> str:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=120).stdout

    def wait_healthy(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("ear did not come up:\n" + self.ctl("tail", "ear"))

    def stop(self) -> None:
        self.ctl("shutdown")
        self.proc.wait(timeout=60)


@pytest.fixture
def supervised(tmp_path):
    s = Supervised(tmp_path)
    yield s
    s.stop()


def _add(s: Supervised, path: Path) -> requests.Response:
    with open(path, "rb") as fh:
        return requests.post(s.url + "/tracks", files={"audio": fh}, headers=AUTH, timeout=120)


def _slowly(path: Path, seconds: float):
    """A file's bytes sent over `seconds`, as from a slow connection."""
    content = path.read_bytes()
    step = len(content) // 20 + 1
    for start in range(0, len(content), step):
        time.sleep(seconds / 20)
        yield content[start: start + step]


def test_restart_finishes_the_request_in_flight_and_keeps_the_catalog(supervised, songs_dir, tmp_path):
    s = supervised
    assert job_done(s.url, _add(s, songs_dir / "song0.flac"))["status"] == "done"
    long_track = write(tmp_path / "long.flac", song(42, seconds=120))
    answer: list[requests.Response] = []
    upload = threading.Thread(target=lambda: answer.append(requests.post(
        s.url + "/tracks", data=_slowly(long_track, 4.0), timeout=120,
        headers={**AUTH, "Content-Type": "audio/flac"})))
    upload.start()
    time.sleep(1.0)  # the upload is on its way now
    asked = time.monotonic()
    assert "ear: stopped" in s.ctl("restart", "ear")
    upload.join()
    s.wait_healthy(30)
    with_upload = time.monotonic() - asked
    assert answer and job_done(s.url, answer[0])["status"] == "done", answer  # finished, not cut
    clip = write(tmp_path / "clip.wav", song(0)[44100 * 5: 44100 * 13]).read_bytes()
    answer = requests.post(s.url + "/identify", data=clip, timeout=60).json()
    asked = time.monotonic()
    s.ctl("restart", "ear")  # idle this time, just after an answer
    s.wait_healthy(30)
    idle = time.monotonic() - asked
    verdict = {"query_id": answer["query_id"], "verdict": "right", "track_id": answer["matches"][0]["track"]["id"]}
    assert requests.post(s.url + "/feedback", json=verdict, timeout=10).status_code == 201  # logged before it stopped
    report = (f"supervisorctl restart ear → first good /health: {idle:.2f} s idle, "
              f"{with_upload:.2f} s with an upload to finish first")
    print("\n" + report)
    (Path(os.environ.get("EAR_ARTIFACTS", tmp_path)) / "restart.txt").write_text(report + "\n")
    titles = sorted(t["title"] for t in requests.get(s.url + "/tracks", timeout=10).json()["tracks"])
    assert titles == ["song0", "upload"]


def test_a_killed_master_is_restarted_and_nothing_is_lost(supervised, songs_dir):
    s = supervised
    assert job_done(s.url, _add(s, songs_dir / "song1.flac"))["status"] == "done"
    pid = int(s.ctl("pid", "ear").strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = s.ctl("pid", "ear").strip()
        if out.isdigit() and int(out) not in (0, pid):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("supervisord did not restart ear: " + s.ctl("status"))
    s.wait_healthy(60)
    tracks = requests.get(s.url + "/tracks", timeout=10).json()["tracks"]
    assert [t["title"] for t in tracks] == ["song1"]


def _running(s: Supervised, job_id: int) -> None:
    """Wait until the job is well into its work."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = requests.get(f"{s.url}/jobs/{job_id}", headers=AUTH, timeout=10).json()["job"]
        if job["status"] == "running" and job["progress"] > 0.2:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get going: {job}")


def _noise(path: Path, seed: int, seconds: float) -> Path:
    """Long audio, quick to make and unlike any other seed's (FFmpeg's pink noise)."""
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"anoisesrc=d={seconds}:c=pink:seed={seed}:r=48000", "-b:a", "48k", str(path)], check=True)
    return path


def test_killed_workers_lose_no_accepted_upload(supervised, tmp_path):
    """`ear worker` SIGKILLed in the middle of a job; then with Gunicorn; then with everything,
    supervisord too (the machine stopping): every accepted upload is added once, the stores
    agree with the database, and each track is found where it is."""
    s = supervised
    tracks = [_noise(tmp_path / f"long{seed}.opus", seed, 600) for seed in range(3)]
    ids = [_add(s, path).json()["job"]["id"] for path in tracks]
    kills = (lambda: s.kill("ear-worker"), lambda: (s.kill("ear-worker"), s.kill("ear")), s.crash)
    for job_id, kill in zip(ids, kills):
        s.wait_healthy(60)
        _running(s, job_id)
        kill()
        if s.proc.poll() is not None:  # supervisord went too: the machine starts again
            s.start()
    s.wait_healthy(60)
    jobs = [job_ended(s.url, job_id) for job_id in ids]
    assert [(j["status"], j["source"]) for j in jobs] == [("done", p.name) for p in tracks], jobs
    served = requests.get(s.url + "/tracks", timeout=10).json()["tracks"]
    assert sorted(t["id"] for t in served) == sorted(j["track"]["id"] for j in jobs)  # once each

    catalog = Catalog(load_config(data_dir=s.root / "srv" / "data"))
    in_db = {t.id for t in catalog.tracks()}
    assert catalog.library().table.track_ids() == in_db
    assert all(catalog.library().index.track_vector(t) is not None for t in in_db)
    for path, job in zip(tracks, jobs):
        clip = tmp_path / "clip.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "400", "-t", "8", "-i", str(path), str(clip)],
                       check=True)
        best = requests.post(s.url + "/identify", data=clip.read_bytes(), timeout=60).json()["matches"][0]
        assert best["track"]["id"] == job["track"]["id"] and abs(best["offset_s"] - 400) < 0.1
