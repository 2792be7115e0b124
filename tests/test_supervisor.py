"""The shipped `supervisor/ear_service.conf` under a real supervisord (PyPI): restart, a request
in flight through a restart, and a SIGKILLed Gunicorn master."""
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
from helpers import AUTH, REPO, free_port
from synth import song, write

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
        self.proc = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)])
        self.wait_healthy(60)

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


def test_restart_finishes_the_request_in_flight_and_keeps_the_catalog(supervised, songs_dir, tmp_path):
    s = supervised
    assert _add(s, songs_dir / "song0.flac").status_code == 201
    long_track = write(tmp_path / "long.flac", song(42, seconds=480))
    answer: list[requests.Response] = []
    upload = threading.Thread(target=lambda: answer.append(_add(s, long_track)))
    upload.start()
    time.sleep(1.0)  # the upload is being ingested now
    asked = time.monotonic()
    assert "ear: stopped" in s.ctl("restart", "ear")
    upload.join()
    assert answer and answer[0].status_code == 201, answer  # finished, not cut
    s.wait_healthy(30)
    with_upload = time.monotonic() - asked
    asked = time.monotonic()
    s.ctl("restart", "ear")  # idle this time
    s.wait_healthy(30)
    idle = time.monotonic() - asked
    report = (f"supervisorctl restart ear → first good /health: {idle:.2f} s idle, "
              f"{with_upload:.2f} s with an upload to finish first")
    print("\n" + report)
    (Path(os.environ.get("EAR_ARTIFACTS", tmp_path)) / "restart.txt").write_text(report + "\n")
    titles = sorted(t["title"] for t in requests.get(s.url + "/tracks", timeout=10).json()["tracks"])
    assert titles == ["long", "song0"]


def test_a_killed_master_is_restarted_and_nothing_is_lost(supervised, songs_dir):
    s = supervised
    assert _add(s, songs_dir / "song1.flac").status_code == 201
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
