"""`ear eval`'s catalog: the benchmark music ingested with each stage timed, and distractors
(pitch/tempo-shifted copies of it) to measure a large catalog. Which tracks are distractors is
the lab's own record (`distractors.json` beside the catalog it describes), not the service's."""
from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..catalog import Catalog
from ..db import Track
from ..decode import SAMPLE_RATE, decode, decode_track
from ..models import serving_model
from ..errors import EarError
from ..storage import read_json, write_json
from ..ingest import (PreparedTrack, audio_files, content_hash, embedding, fingerprint,
                      track_metadata)
from .degrade import resample

_BATCH_TRACKS = 50
_DISTRACTOR_SPEEDS = (0.03, 0.15)  # |speed − 1| of a distractor: unlike any query's ±1 %
_DISTRACTORS = "distractors.json"


def ingest(catalog: Catalog, folders: list[str], stats_path: Path) -> dict | None:
    """Ingest the benchmark music once (stats of that run, or None if they were not kept):
    CPU seconds in all and of the embedding alone, audio seconds, wall seconds."""
    if catalog.library().table.landmark_count:
        return json.loads(stats_path.read_text()) if stats_path.exists() else None
    files = list(audio_files(folders))
    started_wall, started_cpu = time.perf_counter(), _cpu_seconds()
    batch: list[PreparedTrack] = []
    audio_s, embedding_s, skipped = 0.0, 0.0, 0
    for path in files:
        try:
            samples = whole_track(path, catalog.config)
        except EarError as exc:
            print(f"skipped {path}: {exc.message}")
            skipped += 1
            continue
        prints = fingerprint(samples)
        embedding_started = time.thread_time()
        embedded = embedding([samples], serving_model(catalog.config))
        embedding_s += time.thread_time() - embedding_started
        audio_s += samples.size / SAMPLE_RATE
        batch.append(PreparedTrack(str(path), track_metadata(path, str(path), None),
                                   samples.size / SAMPLE_RATE, content_hash(samples), prints, embedded))
        if len(batch) >= _BATCH_TRACKS:
            catalog.store(batch)
            batch.clear()
    if batch:
        catalog.store(batch)
    stats = {"tracks": len(files) - skipped, "skipped": skipped, "audio_s": audio_s,
             "wall_s": time.perf_counter() - started_wall, "cpu_s": _cpu_seconds() - started_cpu,
             "embedding_cpu_s": embedding_s}
    stats_path.write_text(json.dumps(stats))
    return stats


def whole_track(path: str | Path, config) -> np.ndarray:
    """A catalog track decoded whole (the lab's machine has the memory the service lacks)."""
    return np.concatenate(list(decode_track(path, config)))


def distractor_ids(catalog: Catalog) -> set[int]:
    return set((read_json(catalog.config.data_dir / _DISTRACTORS) or {}).get("ids", []))


def real_tracks(catalog: Catalog) -> list[Track]:
    """The benchmark music itself: not a distractor, and its file is there to cut clips from."""
    distractors = distractor_ids(catalog)
    return [t for t in catalog.tracks() if t.id not in distractors and Path(t.source).is_file()]


def add_distractors(catalog: Catalog, wanted: int, seed: int) -> None:
    """Pitch/tempo-shifted copies (3-15 % off speed) of catalog tracks: unlike anything a
    query should match, but music with the same texture and statistics. They are fingerprinted,
    not embedded (the large-catalog targets are the fingerprinter's, and embedding 10,000 tracks
    would take hours here), on every core."""
    done = distractor_ids(catalog)
    originals = sorted(real_tracks(catalog), key=lambda t: t.source)  # not by id: drawn at random
    if len(done) >= wanted or not originals:
        return
    rng = np.random.default_rng(seed + 7)
    copies = -(-wanted // len(originals))
    jobs, made = [], len(done)
    for original in originals:
        n = min(copies, wanted - made)
        if n <= 0:
            break
        low, high = _DISTRACTOR_SPEEDS
        factors = [float(rng.choice([-1, 1]) * rng.uniform(low, high) + 1) for _ in range(n)]
        jobs.append((original.source, original.id, factors, made, catalog.config.max_track_seconds))
        made += n
    started = time.perf_counter()
    # spawn: a forked child would inherit torch's thread pools mid-state
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        for batch in pool.map(_distractor_copies, jobs):
            done |= {track.id for track, _ in catalog.store(batch)}
            write_json(catalog.config.data_dir / _DISTRACTORS, {"ids": sorted(done)})
            print(f"distractors: {len(done)}/{wanted} ({time.perf_counter() - started:.0f} s)", flush=True)


def _distractor_copies(job: tuple) -> list[PreparedTrack]:
    source, original_id, factors, first, max_seconds = job
    torch.set_num_threads(1)
    samples = decode(source, max_seconds=max_seconds, timeout_s=600)
    out = []
    for i, factor in enumerate(factors):
        copy = resample(samples, factor)
        out.append(PreparedTrack(f"{source} ×{factor:.4f}", {"title": f"distractor {first + i}"},
                                 copy.size / SAMPLE_RATE, f"distractor-{first + i}",
                                 fingerprint(copy), None))
    return out


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
