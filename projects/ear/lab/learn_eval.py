"""The learning loop's figures: model versions compared on the held-out tracks of the owner's
catalog, as `ear eval` measures them. A copy of the whole catalog (the held-out tracks among
all the others, so that a query has the real catalog to be confused with) is made in the work
folder, each version in turn embeds it, and the same noisy clips of the held-out tracks are
identified (fusion top-5 at HARD and ULTRA; embeddings alone beside it, the part a model
changes); similar-track precision@10 is that of the held-out tracks' nearest tracks.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import models
from ..catalog import Catalog
from ..config import Config
from ..db import METADATA_FIELDS, Track, close_idle, init_db
from ..errors import EarError
from ..libraries import OWNER
from ..reembed import reembed
from . import clips
from .degrade import LEVELS, noise_bank
from .eval import identify_all
from .similar_eval import precision_at_10

NOISY = ("HARD", "ULTRA")
LENGTHS_S = [5.0, 10.0]
_BATCH_TRACKS = 20


def compare(config: Config, work: Path, versions: dict[str, Path], tracks: list[tuple[Track, Path]],
            held_out: set[int], clips_per_track: int, seed: int) -> dict[str, dict]:
    """{version: its figures} for `versions` ({name: weights}) on the held-out tracks of
    `tracks` (the owner's, with their audio)."""
    copy = replace(config, data_dir=work / "catalog", database_url="")  # never the owner's database
    for name, weights in versions.items():
        if name != models.SHIPPED:
            (models.folder(copy) / name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(weights, models.folder(copy) / name / models.WEIGHTS)
    close_idle()  # the owner's database is let go of cleanly while the copy's is in use
    try:
        catalog = Catalog(copy)
        _fill(catalog, tracks)
        asked = {str(path) for t, path in tracks if t.id in held_out}
        kept = [t for t in catalog.tracks() if t.source in asked]
        noise = noise_bank(work / "noise", seed)
        queries = clips.catalog_clips(work / "queries", kept, [LEVELS[n] for n in NOISY], LENGTHS_S,
                                      clips_per_track, seed, noise)
        scored = {}
        for name in versions:
            models.set_serving(copy, name)
            if catalog.library().model_name() != name:
                reembed(catalog, OWNER)
            scored[name] = {**_identification(identify_all(catalog, queries)),
                            **_similarity(catalog, {t.id for t in kept}),
                            "tracks": len(kept), "queries": len(queries)}
        return scored
    finally:
        init_db(config.database)  # the process's database is the owner's again


def _fill(catalog: Catalog, tracks: list[tuple[Track, Path]]) -> None:
    """Add the tracks the copy lacks (a rerun after a stop adds only the rest)."""
    have = {t.source for t in catalog.tracks()}
    model = catalog.library().model()
    batch = []
    for track, path in tracks:
        if str(path) in have:
            continue
        try:
            batch.append(catalog.prepare_file(path, {k: getattr(track, k) for k in METADATA_FIELDS},
                                              model, link=True))
        except EarError as exc:
            print(f"eval copy: skipped {path}: {exc.message}", flush=True)
        if len(batch) >= _BATCH_TRACKS:
            catalog.store(batch)
            print(f"eval copy: {len(catalog.tracks())}/{len(tracks)} tracks", flush=True)
            batch.clear()
    if batch:
        catalog.store(batch)
    catalog.rebuild_index()


def _identification(results: list[dict]) -> dict:
    out = {}
    for level in NOISY:
        known = [r for r in results if r["level"] == level]
        for kind, key in (("matches", "top5"), ("ml", "embedding_top5")):
            hits = [r for r in known if r["track_id"] in r["ranking"][kind]]
            out[f"{key}_{level.lower()}"] = round(100 * len(hits) / max(len(known), 1), 1)
    return out


def _similarity(catalog: Catalog, asked: set[int]) -> dict:
    """Precision@10 of the held-out tracks' nearest (among every labelled track), by the track
    vectors; none where the catalog's tracks carry no artist and genre."""
    catalog.library().index.refresh()
    labelled = [t for t in catalog.tracks() if t.artist and t.genre]
    vectors = [catalog.library().index.track_vector(t.id) for t in labelled]
    labelled = [t for t, v in zip(labelled, vectors) if v is not None]
    queries = [i for i, t in enumerate(labelled) if t.id in asked]
    if len(labelled) < 11 or not queries:
        return {"p10_artist": None, "p10_genre": None}
    artist, genre = precision_at_10(np.stack([v for v in vectors if v is not None]),
                                    [t.artist for t in labelled], [t.genre for t in labelled], queries)
    return {"p10_artist": round(artist, 1), "p10_genre": round(genre, 1)}
