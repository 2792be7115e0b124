"""deploy/install.sh on a copy of the repository, twice (apt and the system services left out):
the second run changes nothing that the first one made, and the admin token is kept."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import REPO


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: CI runs it as root")
def test_install_twice(tmp_path):
    home = tmp_path / "srv-ear"
    shutil.copytree(REPO, home, ignore=shutil.ignore_patterns(
        ".venv", ".git", "data", "test-artifacts", "__pycache__", "*.egg-info", "build"))
    env = {**os.environ, "EAR_APT": "0", "EAR_USER": "ear-test",
           "EAR_NGINX_SNIPPETS": str(tmp_path / "snippets"), "EAR_NGINX_CONF_DIR": str(tmp_path / "nginx-http"),
           "EAR_SUPERVISOR_CONF_DIR": str(tmp_path / "conf.d"), "EAR_LOG_DIR": str(tmp_path / "log"),
           "EAR_PUBLIC_URL": "https://example.org/ear",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no supervisorctl of ours: nothing restarted
    for name in ("EAR_DATA_DIR", "EAR_PORT", "EAR_ADMIN_TOKEN"):
        env.pop(name, None)

    def install():
        return subprocess.run(["bash", str(home / "deploy/install.sh")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)

    first = install()
    assert first.returncode == 0, first.stderr
    dotenv = (home / ".env").read_text()
    token = next(line for line in dotenv.splitlines() if line.startswith("EAR_ADMIN_TOKEN="))
    assert len(token) > len("EAR_ADMIN_TOKEN=") + 30
    secret = next(line for line in dotenv.splitlines() if line.startswith("EAR_SECRET_KEY="))
    assert len(secret) > len("EAR_SECRET_KEY=") + 30 and secret[15:] not in token
    assert f"EAR_DATA_DIR={home}/data" in dotenv and oct((home / ".env").stat().st_mode)[-3:] == "600"
    assert "\nEAR_PUBLIC_URL=https://example.org/ear\n" in dotenv
    program = (tmp_path / "conf.d/ear.conf").read_text()
    assert f"command={home}/.venv/bin/gunicorn -c {home}/deploy/gunicorn.conf.py" in program
    assert "user=ear-test" in program and f"{tmp_path}/log/ear.log" in program
    assert "proxy_pass http://127.0.0.1:5001/;" in (tmp_path / "snippets/ear.conf").read_text()
    limits = (tmp_path / "nginx-http/ear-limits.conf").read_text()  # the zone the snippet uses
    assert limits == (REPO / "nginx/ear-limits.conf").read_text() and "zone=ear_feedback:" in limits
    check = subprocess.run([str(home / ".venv/bin/python"), "-c",
                            "import torch, annoy, ear; print(torch.__version__)"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip().endswith("+cpu")

    second = install()
    assert second.returncode == 0, second.stderr
    assert (home / ".env").read_text() == dotenv  # the token survives
    assert (tmp_path / "conf.d/ear.conf").read_text() == program
    assert (tmp_path / "nginx-http/ear-limits.conf").read_text() == limits
