"""ear as a VPS installs it: a wheel built from the checkout, installed (not editable) into a
fresh venv with no checkout on sys.path, serves its pages, its widget and its health."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import requests
from helpers import REPO, free_port, wait_until_up


def test_a_wheel_installed_elsewhere_serves_the_widget_and_pages(tmp_path):
    # From a copy: a build/ folder left in the checkout would mask files the wheel lacks.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "data", "build", "test-artifacts", "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("ear-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # The dependencies (torch, flask, ...) from the test venv; its .pth files, and with them
    # the editable checkout, are not read from a path added this way.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import ear; print(ear.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where

    port = free_port()
    env.update(EAR_DATA_DIR=str(tmp_path / "data"), EAR_PORT=str(port))
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(python), "-m", "gunicorn", "-c", str(REPO / "deploy/gunicorn.conf.py")],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/health", proc, log, seconds=60)
        assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"
        widget = requests.get(url + "/widget.js", timeout=10)
        assert widget.ok and "attachShadow" in widget.text
        page = requests.get(url + "/", timeout=10)
        assert page.ok and 'src="/widget.js"' in page.text
        signin = requests.get(url + "/admin/signin", timeout=10)  # the dashboard's templates too
        assert signin.ok and "The admin token, or your key" in signin.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
