from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests  # noqa: F401  (used by the HTTP tests)

sys.path.insert(0, str(Path(__file__).parent))
from synth import song, write  # noqa: E402

from ear.catalog import Catalog  # noqa: E402
from ear.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_SONGS = 6


@pytest.fixture(scope="session")
def songs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("songs")
    for seed in range(N_SONGS):
        write(folder / f"song{seed}.flac", song(seed))
    return folder


@pytest.fixture
def config(tmp_path):
    return load_config(data_dir=tmp_path / "data", admin_token="test-token")


@pytest.fixture
def catalog(config) -> Catalog:
    return Catalog(config)


@pytest.fixture
def filled_catalog(catalog, songs_dir) -> Catalog:
    catalog.store([catalog.prepare(p) for p in sorted(songs_dir.glob("*.flac"))])
    return catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, port: int, proc: subprocess.Popen):
        self.data_dir, self.port, self.proc = data_dir, port, proc
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def gunicorn_server(tmp_path):
    yield from start_gunicorn(tmp_path)


def start_gunicorn(tmp_path: Path, **env_vars: str):
    """A real Gunicorn started the way production starts it: `gunicorn -c deploy/gunicorn.conf.py`."""
    port = free_port()
    data_dir = tmp_path / "served"
    env = {**os.environ, "EAR_DATA_DIR": str(data_dir), "EAR_PORT": str(port),
           "EAR_ADMIN_TOKEN": "test-token", **env_vars}
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy/gunicorn.conf.py")],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(data_dir, port, proc)
    deadline = time.monotonic() + 30
    import requests as rq
    while True:
        try:
            if rq.get(server.url + "/health", timeout=1).ok:
                break
        except rq.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
        time.sleep(0.2)
    yield server
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def clip(audio: np.ndarray, start_s: float, seconds: float, rate: int = 44100) -> np.ndarray:
    return audio[int(start_s * rate): int((start_s + seconds) * rate)]
