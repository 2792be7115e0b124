"""`ear ingest-memory FILE...`: what adding a track costs in memory, by the `ear ingest` command
and by the service (an admin upload to a real Gunicorn started with the production settings,
added by an `ear worker` beside it).

Prints one table: per file, the command's peak RSS and CPU; the web worker's RSS before the
upload and above it during the upload; `ear worker`'s RSS while it waits, and the peak of the
child it forks for the job (VmHWM; standby.py; the child lingers after the job, so it is read
before it goes). All run in processes of their own, so that this
one's memory counts in none.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .service_memory import add_gunicorn_conf_argument, children, ear_worker, serving

_TOKEN = "ingest-memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, each ingested into an empty catalog")
    add_gunicorn_conf_argument(parser)


def run(args: argparse.Namespace) -> int:
    conf = Path(args.gunicorn_conf)
    if not conf.is_file():
        print(f"{conf}: no such Gunicorn settings file; pass --gunicorn-conf.", file=sys.stderr)
        return 2
    print(f"{'file':28} {'audio':>8} {'ear ingest':>11} {'cpu s':>7} {'outcome':>14} {'web idle':>9} "
          f"{'upload':>8} {'worker waits':>12} {'child peak':>10} {'job':>12}", flush=True)
    for name in args.files:
        path = Path(name)
        with tempfile.TemporaryDirectory() as cli_dir, tempfile.TemporaryDirectory() as service_dir:
            cli_peak, cpu, outcome = _cli_ingest(path, Path(cli_dir))
            web, worker, job = _service_upload(path, Path(service_dir), conf)
        print(f"{path.name[:28]:28} {_duration(path):>8} {cli_peak:8.0f} MB {cpu:7.1f} {outcome[:14]:>14} "
              f"{web[0]:6.0f} MB {web[1] - web[0]:+5.0f} MB {worker[0]:9.0f} MB {worker[1]:7.0f} MB "
              f"{job[:12]:>12}", flush=True)
    return 0


def _cli_ingest(path: Path, data_dir: Path) -> tuple[float, float, str]:
    """Peak RSS (MB) and CPU seconds (its FFmpeg included) of `ear ingest PATH`, and how it
    ended ("added", or what it said when it did not add the file)."""
    proc = subprocess.Popen([sys.executable, "-m", "ear.cli", "--data-dir", str(data_dir), "ingest",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    outcome = "added" if said.startswith("added") else said.split("\t")[-1].split(":")[0].strip()
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, outcome


def _service_upload(path: Path, data_dir: Path, conf: Path
                    ) -> tuple[tuple[float, float], tuple[float, float], str]:
    """(idle, peak) RSS in MB of the web worker while it takes `path` as an upload, and of `ear
    worker` waiting and its child adding it; and how the job ended (done, or its error's code)."""
    # An upload limit above the default 50 MB: a 3-hour Opus at 48 kbit/s is 73 MB.
    env = {"EAR_DATA_DIR": str(data_dir), "EAR_ADMIN_TOKEN": _TOKEN, "EAR_MAX_UPLOAD_MB": "200",
           "EAR_DATABASE_URL": ""}  # SQLite in the work folder, whatever .env says
    with serving(conf, env) as (url, _, web), ear_worker(env, data_dir / "worker.log") as proc:
        worker = proc.pid
        idle = {pid: _status(pid, "VmRSS") for pid in (web, worker)}
        for pid in idle:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from here
        job = _call(url + "/tracks", path.read_bytes())["job"]
        while job["status"] not in ("done", "failed"):
            time.sleep(0.2)
            job = _call(f"{url}/jobs/{job['id']}")["job"]
        outcome = job["status"] if job["status"] == "done" else job["error"]["code"]
        child = children(worker)[0]  # still there: it lingers EAR_WORKER_LINGER_S after its job
        return (idle[web], _status(web, "VmHWM")), (idle[worker], _status(child, "VmHWM")), outcome


def _call(url: str, data: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Authorization": f"Bearer {_TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _duration(path: Path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                          "csv=p=0", str(path)], capture_output=True, text=True).stdout.strip()
    try:
        seconds = float(out)
    except ValueError:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"
