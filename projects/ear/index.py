"""Embedding vectors on disk: Annoy files, memory-mapped, rebuilt in the background.

Two Annoy indexes (angular): one item per 2 s window (→ track and time, for fusion) and one per
track (its style vector, for "similar tracks"). Annoy cannot add to a built index, so new
tracks' vectors go to a small *pending* file that queries search exactly, until a rebuild folds
them into new Annoy files. A rebuild reads the old files' vectors, writes the new ones under new
names, then swaps the manifest by atomic rename: queries keep using the old mmaps meanwhile.
"""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from annoy import AnnoyIndex

from .embed import SHIPPED
from .index_files import (NO_BUILT, Built, Pending, empty_pending, open_built, open_pending,
                          pending_arrays, track_column)
from .storage import commit, locked, read_json, replacing, stamp, write_json

WINDOW_TREES = 10
TRACK_TREES = 20


@dataclass(frozen=True)
class _State:
    """What one manifest names, swapped whole: a search never mixes two generations."""

    manifest: dict
    stamp: tuple | None
    built: Built
    pending: Pending
    removed: np.ndarray  # int64 track ids


class EmbeddingIndex:
    def __init__(self, folder: Path, dim: int, track_dim: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim  # of window vectors
        self.track_dim = track_dim
        self._state = _State({}, None, NO_BUILT, empty_pending(dim, track_dim), np.zeros(0, np.int64))
        self._refreshing = threading.Lock()  # one thread at a time reads a new manifest
        self.refresh()

    # ---- reading ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up a new generation if a writer swapped the manifest (cheap when nothing did)."""
        with self._refreshing:
            old, now = self._state, stamp(self.folder / "manifest.json")
            if now is None or now == old.stamp:
                return
            manifest = self._read_manifest()
            built = (old.built if manifest.get("built") == old.manifest.get("built")
                     else open_built(self.folder, manifest.get("built"), self.track_dim))
            pending = open_pending(self.folder, manifest.get("pending", []), self.dim, self.track_dim,
                                   already=(old.manifest.get("pending", []), old.pending))
            self._state = _State(manifest, now, built, pending,
                                 np.asarray(manifest.get("removed", []), np.int64))

    @property
    def removed(self) -> set[int]:
        return set(self._state.removed.tolist())

    @property
    def model(self) -> str | None:
        """The model version (models.py) that made the vectors; None while there are none."""
        return _model_of(self._state.manifest)

    def track_ids(self) -> set[int]:
        """The tracks the index holds vectors of (removed ones aside)."""
        state = self._state
        held = np.concatenate([state.built.track_ids, state.pending.track_ids]).astype(np.int64)
        return set(held[~np.isin(held, state.removed)].tolist())

    @property
    def window_count(self) -> int:
        state = self._state
        return len(state.built.window_items) + len(state.pending.window_items)

    def search_windows(self, vectors: np.ndarray, n: int, search_k: int = -1
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each query vector: (track ids, window starts in s, cosine similarities) of its
        `n` nearest stored windows."""
        out = []
        state = self._state
        built, pending = state.built, state.pending
        for v in vectors:
            ids, dist = ([], [])
            if built.windows is not None:
                ids, dist = built.windows.get_nns_by_vector(v.tolist(), n, search_k, True)
            items = built.window_items[np.asarray(ids, np.int64)]
            sims = 1.0 - np.square(np.asarray(dist, np.float32)) / 2
            if len(pending.window_items):
                extra = pending.window_vectors @ v
                best = np.argsort(-extra)[:n]
                items = np.concatenate([items, pending.window_items[best]])
                sims = np.concatenate([sims, extra[best]])
            keep = ~np.isin(items[:, 0], state.removed)
            out.append((items[keep, 0], items[keep, 1] / 1000.0, sims[keep]))
        return out

    def search_tracks(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, cosine similarities) of the `n` nearest tracks, best first."""
        state = self._state
        built, pending = state.built, state.pending
        ids, sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if built.tracks is not None:
            found, dist = built.tracks.get_nns_by_vector(vector.tolist(), n, -1, True)
            ids = built.track_ids[np.asarray(found, np.int64)].astype(np.int64)
            sims = 1.0 - np.square(np.asarray(dist, np.float32)) / 2
        if len(pending.track_ids):
            ids = np.concatenate([ids, pending.track_ids])
            sims = np.concatenate([sims, pending.track_vectors @ vector])
        keep = ~np.isin(ids, state.removed)
        ids, sims = ids[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")[:n]
        return ids[order], sims[order]

    def track_vector(self, track_id: int) -> np.ndarray | None:
        built, pending = self._state.built, self._state.pending
        hit = np.nonzero(pending.track_ids == track_id)[0]
        if hit.size:
            return pending.track_vectors[hit[0]]
        hit = np.nonzero(built.track_ids == track_id)[0]
        if hit.size and built.tracks is not None:
            return np.asarray(built.tracks.get_item_vector(int(hit[0])), np.float32)
        return None

    # ---- writing ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self, name: str) -> Iterator[dict]:
        with locked(self.folder / name):
            yield self._read_manifest()

    def add(self, tracks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], model: str) -> bool:
        """Store {track id: (window vectors, window starts in s, track vector)} made by `model`;
        searchable at once (pending). False, and nothing stored, if the index holds another
        model's vectors (the caller has them made again by that one)."""
        if not tracks:
            return True
        arrays = pending_arrays(tracks, self.dim, self.track_dim)
        name = f"pending-{uuid.uuid4().hex[:12]}.npz"
        with self._locked(".write.lock") as manifest:  # written under the lock: see `sweep`
            if _model_of(manifest) not in (None, model):
                return False
            with replacing(self.folder / name) as fh:
                np.savez(fh, window_vectors=arrays.window_vectors.astype(np.float16),
                         window_items=arrays.window_items,
                         track_vectors=arrays.track_vectors.astype(np.float16),
                         track_ids=arrays.track_ids)
            manifest["model"] = model  # the first vectors name it
            manifest["pending"] = [*manifest.get("pending", []), name]
            self._write_manifest(manifest)
        self.refresh()
        return True

    def remove(self, track_ids: list[int]) -> None:
        """Hide tracks from every search now; the next rebuild drops their vectors."""
        with self._locked(".write.lock") as manifest:
            manifest["removed"] = sorted(set(manifest.get("removed", [])) | set(track_ids))
            self._write_manifest(manifest)
        self.refresh()

    def sweep(self) -> None:
        """Delete the files no manifest names: leftovers of a process killed while it added
        vectors or rebuilt. Files are only written under the locks, so while anyone holds
        one, nothing is swept (and this never waits: the next start sweeps)."""
        with locked(self.folder / ".build.lock", wait=False) as building_free, \
                locked(self.folder / ".write.lock", wait=False) as writing_free:
            if not (building_free and writing_free):
                return
            manifest = self._read_manifest()
            named = {*manifest.get("pending", []),
                     *(v for v in (manifest.get("built") or {}).values() if isinstance(v, str))}
            for path in self.folder.iterdir():
                leftover = path.name.startswith(("pending-", "windows-", "tracks-")) or path.suffix == ".tmp"
                if leftover and path.name not in named:
                    path.unlink(missing_ok=True)

    def needs_rebuild(self) -> bool:
        manifest = self._read_manifest()
        return bool(manifest.get("pending") or manifest.get("removed"))

    def rebuild(self, force: bool = False,
                replace: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                model: str | None = None) -> bool:
        """Fold pending vectors into new Annoy files, dropping removed tracks; False if there
        was nothing to do. One rebuild at a time; adds and queries go on meanwhile.
        `replace`: new vectors for some tracks, made by `model`, instead of their old. If
        `model` is not the index's, the new files hold these vectors alone (every other is the
        old model's, and waits to be made again), record `model`, and queries follow it from
        their swap."""
        with self._locked(".build.lock") as start:
            if not force and not replace and not (start.get("pending") or start.get("removed")):
                return False
            generation = start.get("generation", 0) + 1
            changes_model = model is not None and model != _model_of(start)
            removed = set(start.get("removed", []))
            old = NO_BUILT if changes_model else open_built(self.folder, start.get("built"), self.track_dim)
            pending = open_pending(self.folder, [] if changes_model else start.get("pending", []),
                                   self.dim, self.track_dim)
            if replace:
                pending = _replaced(pending, pending_arrays({t: v for t, v in replace.items() if t not in removed},
                                                            self.dim, self.track_dim))
            built = self._build(generation, old, pending, removed, removed | set(replace or ()))
            with self._locked(".write.lock") as manifest:
                previous = manifest.get("built")
                manifest.update(built=built, generation=generation)
                late = [p for p in manifest.get("pending", []) if p not in start.get("pending", [])]
                if changes_model:  # what was added meanwhile is the old model's too
                    manifest["model"] = model
                manifest["pending"] = [] if changes_model else late
                manifest["removed"] = sorted(set(manifest.get("removed", [])) - removed)
                self._write_manifest(manifest)
            # Readers that still map the old files keep them alive until they let go.
            for name in [*(previous or {}).values(), *start.get("pending", []), *(late if changes_model else [])]:
                if isinstance(name, str):
                    (self.folder / name).unlink(missing_ok=True)
        self.refresh()
        return True

    def _build(self, generation: int, old: Built, pending: Pending, removed: set[int],
               removed_old: set[int]) -> dict:
        names = {"windows": f"windows-{generation}.ann", "window_items": f"windows-{generation}.npy",
                 "tracks": f"tracks-{generation}.ann", "track_ids": f"tracks-{generation}.npy",
                 "dim": self.dim, "track_dim": self.track_dim}
        for kind, items_key, trees, dim, old_index, old_items, new_vectors, new_items in (
                ("windows", "window_items", WINDOW_TREES, self.dim, old.windows, old.window_items,
                 pending.window_vectors, pending.window_items),
                ("tracks", "track_ids", TRACK_TREES, self.track_dim, old.tracks, old.track_ids,
                 pending.track_vectors, pending.track_ids)):
            keep_old = np.nonzero(~np.isin(track_column(old_items), list(removed_old)))[0]
            keep_new = np.nonzero(~np.isin(track_column(new_items), list(removed)))[0]
            tmp = self.folder / (names[kind] + ".tmp")
            tmp.unlink(missing_ok=True)
            index = AnnoyIndex(dim, "angular")
            index.on_disk_build(str(tmp))  # built in a file-backed map, not in anonymous memory
            n = 0
            for i in keep_old:
                index.add_item(n, old_index.get_item_vector(int(i)))
                n += 1
            for i in keep_new:
                index.add_item(n, new_vectors[i].tolist())
                n += 1
            index.build(trees, n_jobs=1)
            index.unload()
            items = np.concatenate([old_items[keep_old], new_items[keep_new]])
            with replacing(self.folder / names[items_key]) as fh:
                np.save(fh, np.ascontiguousarray(items))
            commit(tmp, self.folder / names[kind])
        return names

    # ---- files -----------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        return read_json(self.folder / "manifest.json") or {"generation": 0}

    def _write_manifest(self, manifest: dict) -> None:
        write_json(self.folder / "manifest.json", manifest)


def _model_of(manifest: dict) -> str | None:
    # An index from before versions were recorded holds the shipped model's vectors.
    if manifest.get("built") or manifest.get("pending"):
        return manifest.get("model", SHIPPED)
    return manifest.get("model")


def _replaced(pending: Pending, extra: Pending) -> Pending:
    """`pending` with the tracks of `extra` taking their vectors from it."""
    replaced = list(track_column(extra.track_ids))
    return Pending(*(np.concatenate([getattr(pending, name)[~np.isin(track_column(getattr(pending, ids)), replaced)],
                                     getattr(extra, name)])
                     for name, ids in (("window_vectors", "window_items"), ("window_items", "window_items"),
                                       ("track_vectors", "track_ids"), ("track_ids", "track_ids"))))
