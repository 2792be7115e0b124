"""An embedding index's files (index.py): one generation of Annoy files, opened read-only
(memory-mapped, paged in on use), and the pending vectors that no Annoy file holds yet."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from .embed import unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    """One generation of Annoy files, opened read-only (mmap)."""

    windows: AnnoyIndex | None
    window_items: np.ndarray  # (n, 2) int32: track id, start in ms
    tracks: AnnoyIndex | None
    track_ids: np.ndarray  # (m,) int32


@dataclass(frozen=True)
class Pending:
    window_vectors: np.ndarray  # (n, dim) float32
    window_items: np.ndarray  # (n, 2) int32
    track_vectors: np.ndarray  # (m, dim) float32
    track_ids: np.ndarray  # (m,) int32


NO_BUILT = Built(None, np.zeros((0, 2), np.int32), None, np.zeros(0, np.int32))


def open_built(folder: Path, names: dict | None, track_dim: int) -> Built:
    """The Annoy files a manifest's `built` names, mapped."""
    if not names:
        return NO_BUILT
    windows = AnnoyIndex(names["dim"], "angular")
    windows.load(str(folder / names["windows"]), prefault=False)  # mmap, paged in on use
    window_items = np.load(folder / names["window_items"], mmap_mode="r")
    if names.get("track_dim", names["dim"]) != track_dim:
        # Built by an older ear whose track vectors were of another kind: until `ear
        # reindex --reembed` replaces them, similar-track searches see only newly added tracks.
        log.warning("%s: track vectors out of date, run `ear reindex --reembed`", folder)
        return Built(windows, window_items, None, np.zeros(0, np.int32))
    tracks = AnnoyIndex(track_dim, "angular")
    tracks.load(str(folder / names["tracks"]), prefault=False)
    return Built(windows, window_items, tracks, np.load(folder / names["track_ids"], mmap_mode="r"))


def open_pending(folder: Path, names: list[str], dim: int, track_dim: int,
                 already: tuple[list[str], Pending] | None = None) -> Pending:
    """The pending files a manifest names, read whole (they are small: a rebuild folds them).
    `already`: files read before and what they held. When `names` only adds to them (a track
    was added: the usual change) only the new files are read; else all are. Reading them all
    at each addition made a bulk upload of n tracks read n²/2 files (docs/speed.md)."""
    held, read = empty_pending(dim, track_dim), names
    if already is not None and already[0] == names[:len(already[0])]:
        held, read = already[1], names[len(already[0]):]
    if not read:
        return held
    parts = [held, *(_read_pending(folder / name) for name in read)]
    return Pending(*(np.concatenate([getattr(p, key) for p in parts])
                     for key in ("window_vectors", "window_items", "track_vectors", "track_ids")))


def _read_pending(path: Path) -> Pending:
    with np.load(path) as held:
        return Pending(held["window_vectors"].astype(np.float32), held["window_items"].astype(np.int32),
                       held["track_vectors"].astype(np.float32), held["track_ids"].astype(np.int32))


def empty_pending(dim: int, track_dim: int) -> Pending:
    return Pending(np.zeros((0, dim), np.float32), np.zeros((0, 2), np.int32),
                   np.zeros((0, track_dim), np.float32), np.zeros(0, np.int32))


def pending_arrays(tracks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], dim: int,
                   track_dim: int) -> Pending:
    """{track: (window vectors, starts in s, track vector)} → arrays."""
    if not tracks:
        return empty_pending(dim, track_dim)
    return Pending(
        np.concatenate([v for v, _, _ in tracks.values()]).astype(np.float32),
        np.concatenate([np.stack([np.full(len(t), tid), np.round(np.asarray(t) * 1000)], axis=1)
                        for tid, (_, t, _) in tracks.items()]).astype(np.int32),
        np.stack([unit(np.asarray(s, np.float32)) for _, _, s in tracks.values()]),
        np.fromiter(tracks, np.int32, len(tracks)))


def track_column(items: np.ndarray) -> np.ndarray:
    return items[:, 0] if items.ndim == 2 else items
