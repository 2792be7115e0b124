"""`ear busy`: what a bulk upload costs the listeners (issue 14), measured on a real Gunicorn
started with the production settings and a real `ear worker` beside it, on one machine, in one
run; printed as markdown tables (busy_tables.py).

Phases, in order, on a catalog that `ear ingest` makes first in `--work`/data (made afresh):
idle (/identify latency with the worker running but idle), bulk (every upload POSTed at once
while /identify clips go on, one after the other, until every job has ended; the worker's CPU
meanwhile, FFmpeg's included), queued (the worker stopped, `--queued` uploads waiting: /identify
and the job API again). Private memory of the master, the web worker and the ear worker is
read before the bulk and after it.

The measuring runs in a process that has never imported torch or numpy (when `ear busy` has,
it replaces itself with `python -m ear.lab.busy`): library pages that process also mapped
would count as shared, not as the service's own.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..originals import AUDIO_SUFFIXES
from .busy_phases import AUTH, TOKEN, measure
from .busy_tables import Results, report
from .service_memory import add_gunicorn_conf_argument, ear_worker, exec_without_torch, serving

_CLIP_S = 10.0  # the widget's longest recording
_OPUS_KBPS = 32  # what the widget's MediaRecorder asks for
_SEED = 14  # the clips' offsets: the same every run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, metavar="DIR",
                        help="audio ingested first (by `ear ingest`) as the searchable catalog")
    parser.add_argument("--uploads", required=True, metavar="DIR",
                        help="audio POSTed to /tracks in bulk: none of it in the catalog")
    parser.add_argument("--count", type=int, default=50, help="uploads to send (default 50)")
    parser.add_argument("--clips", type=int, default=40,
                        help="10 s query clips cut from catalog tracks (default 40)")
    parser.add_argument("--queued", type=int, default=1000,
                        help="jobs left queued for the last phase (default 1000)")
    parser.add_argument("--samples", type=int, default=100,
                        help="/identify queries per idle or queued phase, at least (default 100)")
    parser.add_argument("--work", default="busy-work", help="folder for the data dir and clips")
    add_gunicorn_conf_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Prepare the catalog and the clips, measure every phase, print the tables."""
    conf, uploads = Path(args.gunicorn_conf), _audio(Path(args.uploads))[: args.count]
    if not conf.is_file():
        print(f"{conf}: no such Gunicorn settings file; pass --gunicorn-conf.", file=sys.stderr)
        return 2
    if not uploads:
        print(f"{args.uploads}: no audio files to upload.", file=sys.stderr)
        return 2
    exec_without_torch("ear.lab.busy", args)
    started = time.perf_counter()
    work = Path(args.work).resolve()
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = {"EAR_DATA_DIR": str(data), "EAR_ADMIN_TOKEN": TOKEN, "EAR_DATABASE_URL": ""}  # not .env's
    results = Results(uploads=len(uploads), queued=args.queued)
    _ingest_catalog(Path(args.catalog), env, results)
    with serving(conf, env) as (url, master, web), ear_worker(env, work / "worker.log") as worker:
        clips = _cut_clips(_catalog_tracks(url, results), args.clips, work / "clips")
        time.sleep(1.0)  # the worker's first look at the queue
        pids = {"master": master, "web worker": web, "ear worker": worker.pid}
        measure(url, pids, worker, clips, uploads, math.ceil(args.samples / len(clips)), results)
    results.wall_s = time.perf_counter() - started
    print(report(results), flush=True)
    return 0


def _audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _ingest_catalog(folder: Path, env: dict[str, str], results: Results) -> None:
    """`ear ingest FOLDER` into the data dir (its progress on stderr)."""
    print(f"ear ingest {folder} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ear.cli", "ingest", str(folder)], env={**os.environ, **env},
                   stdout=subprocess.DEVNULL, check=True)
    results.ingest_s = time.perf_counter() - started


def _catalog_tracks(url: str, results: Results) -> list[tuple[int, float, str]]:
    """The catalog's tracks as GET /tracks lists them to the admin: (id, seconds, source)."""
    listed = requests.get(url + "/tracks", headers=AUTH, timeout=60).json()["tracks"]
    tracks = [(t["id"], t["duration"], t["source"]) for t in listed]
    results.catalog_tracks, results.catalog_s = len(tracks), sum(t[1] for t in tracks)
    return tracks


def _cut_clips(tracks: list[tuple[int, float, str]], count: int, folder: Path) -> list[tuple[int, Path]]:
    """`count` clips of _CLIP_S, from the tracks in turn at random offsets, mono Opus in WebM as
    a browser sends them; each with the id of its track."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    usable = [t for t in tracks if t[1] > _CLIP_S + 1]
    rng = random.Random(_SEED)
    clips = []
    for n in range(count if usable else 0):
        track_id, seconds, source = usable[n % len(usable)]
        start = rng.uniform(0, seconds - _CLIP_S - 0.5)
        path = folder / f"clip{n:03d}.webm"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start:.3f}", "-t", str(_CLIP_S),
                        "-i", source, "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a",
                        f"{_OPUS_KBPS}k", "-f", "webm", "-y", str(path)], check=True, timeout=120)
        clips.append((track_id, path))
    if not clips:
        raise SystemExit(f"ear busy: no catalog track is longer than {_CLIP_S + 1:g} s to cut clips from")
    return clips


def main() -> int:
    parser = argparse.ArgumentParser(prog="ear busy")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
