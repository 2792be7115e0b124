"""`ear ingest-memory FILE...`: what adding a track costs in memory, by the `ear ingest` command
and by the service (an admin upload to a real Gunicorn started with the production settings).

Prints one table: per file, the command's peak RSS and CPU, and the worker's RSS before the
upload and its peak during it (VmHWM, reset before the upload through /proc/PID/clear_refs).
Both run in processes of their own, so that this one's memory counts in neither.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .service_memory import serving

_TOKEN = "ingest-memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, each ingested into an empty catalog")
    parser.add_argument("--gunicorn-conf", default="deploy/gunicorn.conf.py",
                        help="Gunicorn settings the service runs with (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    conf = Path(args.gunicorn_conf)
    if not conf.is_file():
        print(f"{conf}: no such Gunicorn settings file; pass --gunicorn-conf.", file=sys.stderr)
        return 2
    print(f"{'file':28} {'audio':>8} {'ear ingest':>11} {'cpu s':>7} {'outcome':>14} {'worker idle':>12} "
          f"{'upload peak':>12} {'above idle':>11} {'answer':>8}", flush=True)
    for name in args.files:
        path = Path(name)
        with tempfile.TemporaryDirectory() as cli_dir, tempfile.TemporaryDirectory() as service_dir:
            cli_peak, cpu, outcome = _cli_ingest(path, Path(cli_dir))
            idle, peak, status = _service_upload(path, Path(service_dir), conf)
        print(f"{path.name[:28]:28} {_duration(path):>8} {cli_peak:8.0f} MB {cpu:7.1f} {outcome[:14]:>14} {idle:9.0f} MB "
              f"{peak:9.0f} MB {peak - idle:8.0f} MB {status:>8}", flush=True)
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


def _service_upload(path: Path, data_dir: Path, conf: Path) -> tuple[float, float, str]:
    """The worker's RSS before, its peak while it takes `path` as an upload (MB), and the
    answer's status."""
    # An upload limit above the default 50 MB: a 3-hour Opus at 48 kbit/s is 73 MB.
    env = {"EAR_DATA_DIR": str(data_dir), "EAR_ADMIN_TOKEN": _TOKEN, "EAR_MAX_UPLOAD_MB": "200"}
    # Analysing an hours-long upload takes longer than the production request timeout (120 s):
    # measured here with room for it.
    with serving(conf, env, "--timeout", "1800") as (url, _, worker):
        idle = _status(worker, "VmRSS")
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # the peak starts again from here
        request = urllib.request.Request(url + "/tracks", data=path.read_bytes(), method="POST",
                                         headers={"Authorization": f"Bearer {_TOKEN}"})
        try:
            status = str(urllib.request.urlopen(request, timeout=1800).status)
        except urllib.error.HTTPError as exc:
            status = str(exc.code)
        return idle, _status(worker, "VmHWM"), status


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
