"""`ear eval`'s queries: clips cut from catalog tracks (and from music not in the catalog), put
through a room at each level, and encoded as a browser would send them. Planned from a seed and
rendered once into the work folder; reused while the plan's inputs are unchanged."""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..db import Track
from ..errors import EarError
from ..ingest import audio_files
from .degrade import LEVELS, RATE, Level, degrade, encode_opus_webm, read_clip, resample

_MIN_UNKNOWN_S = 12  # music shorter than this gives no unknown clips


def catalog_clips(folder: Path, tracks: list[Track], levels: list[Level], lengths: list[float],
                  clips_per_track: int, seed: int, noise: dict[str, np.ndarray]) -> list[dict]:
    """Clips of catalog tracks at random offsets; every other one off speed where the level
    says so, half of those faster. Planned by the tracks' files, not their ids (drawn at random
    when a catalog is built), so that a rebuilt catalog is asked the same clips."""
    tracks = sorted(tracks, key=lambda t: t.source)

    def plan() -> list[dict]:
        rng = np.random.default_rng(seed)
        jobs, clip_no = [], 0
        for track in tracks:
            for length in lengths:
                for _ in range(clips_per_track):
                    if track.duration < length * 1.05 + 0.5:
                        continue
                    start = float(rng.uniform(0, track.duration - length * 1.02 - 0.2))
                    direction = {1: 1, 3: -1}.get(clip_no % 4, 0)
                    clip_no += 1
                    for level in levels:
                        jobs.append({"source": track.source, "track_id": track.id, "start_s": start,
                                     "length_s": length, "level": level.name,
                                     "speed": 1.0 + direction * level.speed_error,
                                     "seed": int(rng.integers(1 << 31))})
        return jobs

    spec = {"plan": 3, "seed": seed, "tracks": [t.source for t in tracks], "lengths": lengths,
            "levels": [lv.name for lv in levels], "per": clips_per_track}
    ids = {t.source: t.id for t in tracks}
    return [{**job, "track_id": ids[job["source"]]} for job in _cached(folder, spec, plan, noise)]


def unknown_clips(folder: Path, dirs: list[str], levels: list[Level], count: int, seed: int,
                  noise: dict[str, np.ndarray], lengths: tuple[float, ...] = (5.0, 10.0)) -> list[dict]:
    """`count` clips (of `lengths` in turn) per level of music not in the catalog."""
    if not dirs:
        return []
    files = list(audio_files(dirs))

    def plan() -> list[dict]:
        rng = np.random.default_rng(seed + 1)
        durations = {}
        for f in files:
            out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                  "-of", "csv=p=0", str(f)], capture_output=True, text=True)
            try:
                durations[f] = float(out.stdout.strip())
            except ValueError:
                pass
        usable = [f for f, d in durations.items() if d > _MIN_UNKNOWN_S]
        if not usable:
            raise EarError("no_unknown_audio", f"No audio file in {', '.join(dirs)} is longer "
                           f"than {_MIN_UNKNOWN_S} s: no unknown clips can be cut.")
        jobs = []
        for n in range(count):
            f = usable[n % len(usable)]
            length = lengths[n % len(lengths)]
            start = float(rng.uniform(0, durations[f] - length - 0.5))
            for level in levels:
                jobs.append({"source": str(f), "track_id": None, "start_s": start,
                             "length_s": length, "level": level.name, "speed": 1.0,
                             "seed": int(rng.integers(1 << 31))})
        return jobs

    spec = {"seed": seed, "files": [str(f) for f in files], "n": count,
            "levels": [lv.name for lv in levels]}
    if lengths != (5.0, 10.0):  # the default's plans (and work folders) stay as they were
        spec["lengths"] = list(lengths)
    return _cached(folder, spec, plan, noise)


def _cached(folder: Path, spec: dict, plan: Callable[[], list[dict]],
            noise: dict[str, np.ndarray]) -> list[dict]:
    """Query jobs planned by `plan()` and rendered to files, reused while `spec` is unchanged."""
    index = folder / "queries.json"
    if index.exists():
        saved = json.loads(index.read_text())
        if saved["spec"] == spec:
            return saved["queries"]
    folder.mkdir(parents=True, exist_ok=True)
    jobs = plan()
    for n, job in enumerate(jobs):
        job["file"] = str(folder / f"{n:05d}-{job['level']}.webm")
        job["noise"] = list(noise)[n % len(noise)]
    _render(jobs, noise)
    index.write_text(json.dumps({"spec": spec, "queries": jobs}))
    return jobs


def _render(jobs: list[dict], noise: dict[str, np.ndarray]) -> None:
    def one(job: dict) -> None:
        level = LEVELS[job["level"]]
        rng = np.random.default_rng(job["seed"])
        clip = read_clip(Path(job["source"]), job["start_s"], job["length_s"] * job["speed"] + 0.05)
        if job["speed"] != 1.0:
            clip = resample(clip, job["speed"])
        clip = clip[: int(job["length_s"] * RATE)]
        encode_opus_webm(degrade(clip, level, noise[job["noise"]], rng), Path(job["file"]), level.opus_kbps)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, jobs))
    print(f"rendered {len(jobs)} query clips in {time.perf_counter() - started:.0f} s", flush=True)
