"""What several test modules share that is not a fixture: starting the real programs (Gunicorn,
Nginx, the `ear` command), and clips as a phone in a room would send them."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from synth import RATE

from ear.decode import decode
from ear.models import shipped_model
from ear.routes.helpers import EXTENSION
from ear.worker import Worker
from ear.lab.degrade import LEVELS, RATE as ROOM_RATE, degrade, encode_opus_webm, pink_noise, resample

REPO = Path(__file__).resolve().parents[1]
AUTH = {"Authorization": "Bearer test-token"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip(audio: np.ndarray, start_s: float, seconds: float, rate: int = RATE) -> np.ndarray:
    return audio[int(start_s * rate): int((start_s + seconds) * rate)]


def room_clip(audio: np.ndarray, start_s: float, seconds: float, level: str, tmp_path: Path,
              seed: int = 0) -> np.ndarray:
    """A clip as a phone in a room would send it: reverb, band limit, noise, Opus/WebM; decoded."""
    mono = clip(audio, start_s, seconds)[:, 0]
    x = resample(mono, RATE / ROOM_RATE)  # 44.1 kHz → 48 kHz
    rng = np.random.default_rng(seed)
    x = degrade(x, LEVELS[level], pink_noise(x.size, rng), rng)
    path = tmp_path / f"q{seed}-{level}.webm"
    encode_opus_webm(x, path, 32)
    return decode(path, max_seconds=30, timeout_s=30)


def at_16k(audio: np.ndarray, start_s: float, seconds: float) -> np.ndarray:
    """A clean stretch of a synthesized song, mono at 16 kHz, as `decode` would give it."""
    return resample(clip(audio, start_s, seconds).mean(axis=1), RATE / 16000)


def work(app) -> int:
    """Do the app's queued jobs as `ear worker` does them (its Worker, in this process); how
    many ended."""
    return Worker(app.extensions[EXTENSION], "tests").run()


def added(client, data, headers=AUTH, **post) -> dict:
    """POST /tracks through a test client and let the worker do the job: the job as
    GET /jobs/<id> then shows it (`status`, `track` or `error`)."""
    response = client.post("/tracks", data=data, headers=headers, **post)
    assert response.status_code == 202, response.get_json()
    work(client.application)
    return client.get(f"/jobs/{response.get_json()['job']['id']}", headers=headers).get_json()["job"]


def run_ear(data_dir: Path, *args: str, check: bool = True, database_url: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `ear` command as a user runs it (on the database at `database_url`, if given; with
    `env`'s settings besides)."""
    env = {**os.environ, "EAR_DATABASE_URL": database_url, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "ear.cli", "--data-dir", str(data_dir), *args],
                            capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


WORKER_APP_NAME = "ear worker"


class Server:
    def __init__(self, data_dir: Path, port: int, proc: subprocess.Popen):
        self.data_dir, self.port, self.proc = data_dir, port, proc
        self.url = f"http://127.0.0.1:{port}"


def start_gunicorn(tmp_path: Path, ask: bool = True, **env_vars: str):
    """A real Gunicorn started the way production starts it: `gunicorn -c deploy/gunicorn.conf.py`,
    and beside it `ear worker`, as Supervisor runs them (supervisor/ear_service.conf).
    A generator: the first `next` gives the Server, once /health answers (`ask` False: once
    Gunicorn's worker has booted, before any request); the second stops them."""
    port = free_port()
    data_dir = tmp_path / "served"
    env = {**os.environ, "EAR_DATA_DIR": str(data_dir), "EAR_PORT": str(port),
           "EAR_ADMIN_TOKEN": "test-token", **env_vars}
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy/gunicorn.conf.py")],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(data_dir, port, proc)
    wait_until_up(server.url + "/health", proc, tmp_path / "gunicorn.log", ask=ask)
    # PGAPPNAME: on PostgreSQL, its connections are told apart from Gunicorn's (pg_stat_activity).
    worker = subprocess.Popen([sys.executable, "-m", "ear.cli", "worker"], cwd=tmp_path,
                              env={**env, "PGAPPNAME": WORKER_APP_NAME}, stdout=log, stderr=subprocess.STDOUT)
    yield server
    for running in (worker, proc):
        running.terminate()
        running.wait(timeout=30)
    log.close()


def job_done(base_url: str, response: requests.Response) -> dict:
    """The job a POST /tracks answered (202), once a worker has ended it."""
    assert response.status_code == 202, response.text
    return job_ended(base_url, response.json()["job"]["id"])


def job_ended(base_url: str, job_id: int, timeout_s: float = 120) -> dict:
    """GET /jobs/<id> once it says done or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = requests.get(f"{base_url}/jobs/{job_id}", headers=AUTH, timeout=10).json()["job"]
        if job["status"] in ("done", "failed"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job not ended in {timeout_s} s: {job}")
        time.sleep(0.1)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, seconds: float = 30, ask: bool = True) -> None:
    """Until `url` answers (`ask` False: until Gunicorn's log says its worker booted)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ask and requests.get(url, timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        if not ask and "Booting worker" in log.read_text():
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up:\n" + log.read_text())
        time.sleep(0.2)


def start_nginx(upstream_port: int, site_port: int | None = None) -> tuple[str, Path]:
    """Nginx with its own prefix dir, serving the shipped location block (upstream port swapped
    in) and its http-level limits; the rest of the site is a fixed page, or the site app on
    `site_port`."""
    # Its workers run as `nobody` when started by root: their temp dirs must be reachable, and
    # pytest's tmp_path (0700) is not.
    prefix = Path(tempfile.mkdtemp(prefix="ear-nginx-"))
    os.chmod(prefix, 0o755)
    port = free_port()
    location = (REPO / "nginx/ear.conf").read_text().replace("127.0.0.1:5001", f"127.0.0.1:{upstream_port}")
    (prefix / "ear.conf").write_text(location)
    (prefix / "ear-limits.conf").write_text((REPO / "nginx/ear-limits.conf").read_text())
    temp = "\n".join(f"    {name}_temp_path {prefix}/{name}_temp;"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    site = (f"proxy_pass http://127.0.0.1:{site_port}; proxy_set_header Host $http_host;"
            if site_port else 'return 200 "the personal site\\n";')
    (prefix / "nginx.conf").write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
{temp}
    include {prefix}/ear-limits.conf;  # as Debian's nginx.conf includes conf.d/*.conf
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{ {site} }}
        include {prefix}/ear.conf;
    }}
}}
""")
    subprocess.run(["nginx", "-t", "-p", str(prefix), "-e", str(prefix / "error.log"),
                    "-c", str(prefix / "nginx.conf")], check=True, capture_output=True)
    subprocess.run(["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"),
                    "-c", str(prefix / "nginx.conf")], check=True)
    return f"http://127.0.0.1:{port}", prefix


def stop_nginx(prefix: Path) -> None:
    subprocess.run(["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"),
                    "-c", str(prefix / "nginx.conf"), "-s", "quit"], check=False)
    subprocess.run(["rm", "-rf", str(prefix)], check=False)


def noise_opus(folder: Path, seed: int, seconds: float) -> bytes:
    """Audio unlike any other seed's, quick to make: FFmpeg's pink noise, as Opus."""
    path = folder / f"noise{seed}.opus"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:seed={seed}",
                    "-b:a", "32k", str(path)], check=True)
    return path.read_bytes()
