"""`ear eval --similar`: does "similar" find the same artist and genre? Precision@10 of the
model's track vectors against MFCC mean+std vectors, both searched in an Annoy angular index."""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import torch
from annoy import AnnoyIndex

from ..catalog import Catalog
from ..db import Track
from ..embed import LogMel
from ..index import TRACK_TREES
from .bench_catalog import whole_track

N_MFCC = 20


def similarity_report(catalog: Catalog, tracks: list[Track], labels_csv: str | None) -> str:
    """Precision@10 over `tracks` (the benchmark music, without distractors)."""
    labels = _labels(tracks, labels_csv)
    tracks = [t for t in tracks if t.id in labels]
    catalog.library().index.refresh()
    model = [catalog.library().index.track_vector(t.id) for t in tracks]
    tracks = [t for t, v in zip(tracks, model) if v is not None]
    model_vectors = np.stack([v for v in model if v is not None])
    mfcc_vectors = np.stack([mfcc_stats(whole_track(t.source, catalog.config)) for t in tracks])
    # Standardise each MFCC statistic over the catalog, or c0 (loudness) decides everything.
    mfcc_vectors = (mfcc_vectors - mfcc_vectors.mean(0)) / (mfcc_vectors.std(0) + 1e-9)
    artists = [labels[t.id][0] for t in tracks]
    genres = [labels[t.id][1] for t in tracks]
    lines = [f"similar tracks: {len(tracks)} labelled tracks, {len(set(artists))} artists, "
             f"{len(set(genres))} genres; precision@10 (the query track itself excluded)",
             f"{'vectors':22} {'same artist':>12} {'same genre':>11}"]
    for name, vectors in (("model (track index)", model_vectors), ("MFCC mean+std", mfcc_vectors)):
        a, g = precision_at_10(vectors, artists, genres)
        lines.append(f"{name:22} {a:11.1f}% {g:10.1f}%")
    return "\n".join(lines)


def mfcc_stats(samples: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of 20 MFCCs (the classic timbre baseline)."""
    with torch.inference_mode():
        logmel = LogMel()(torch.from_numpy(samples[None, :]))[0].numpy()  # (mels, frames)
    n = logmel.shape[0]
    k = np.arange(N_MFCC)[:, None]
    dct = np.cos(np.pi / n * (np.arange(n)[None, :] + 0.5) * k)  # DCT-II rows
    mfcc = dct @ logmel
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)


def precision_at_10(vectors: np.ndarray, artists: list[str], genres: list[str],
                    queries: list[int] | None = None) -> tuple[float, float]:
    """Per cent of the 10 nearest tracks with the query track's artist, and genre, over the
    `queries` (indexes into `vectors`; default all), the query itself excluded."""
    with tempfile.TemporaryDirectory() as tmp:
        index = AnnoyIndex(vectors.shape[1], "angular")
        index.on_disk_build(str(Path(tmp) / "eval.ann"))
        for i, v in enumerate(vectors):
            index.add_item(i, v.tolist())
        index.build(TRACK_TREES, n_jobs=1)
        same_artist, same_genre = [], []
        for i in range(len(vectors)) if queries is None else queries:
            found = [j for j in index.get_nns_by_item(i, 11) if j != i][:10]
            same_artist.append(np.mean([artists[j] == artists[i] for j in found]))
            same_genre.append(np.mean([genres[j] == genres[i] for j in found]))
        index.unload()
    return 100 * float(np.mean(same_artist)), 100 * float(np.mean(same_genre))


def _labels(tracks: list[Track], labels_csv: str | None) -> dict[int, tuple[str, str]]:
    """{track id: (artist, genre)}; tracks without both labels are left out."""
    if not labels_csv:
        return {t.id: (t.artist, t.genre) for t in tracks if t.artist and t.genre}
    with open(labels_csv, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    out = {}
    for t in tracks:
        for folder, artist, genre in rows:
            if t.source.startswith(folder.rstrip("/") + "/"):
                out[t.id] = (artist.strip(), genre.strip())
    return out
