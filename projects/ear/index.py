"""Embedding vectors on disk: Annoy files, memory-mapped, rebuilt in the background.

Two Annoy indexes (angular): one item per 2 s window (→ track and time, for fusion) and one per
track (its style vector, for "similar tracks"). Annoy cannot add to a built index, so new
tracks' vectors go to a small *pending* file that queries search exactly, until a rebuild folds
them into new Annoy files. A rebuild reads the old files' vectors, writes the new ones under new
names, then swaps the manifest by atomic rename: queries keep using the old mmaps meanwhile.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from annoy import AnnoyIndex

from .embed import unit
from .storage import commit, locked, read_json, replacing, stamp, write_json

log = logging.getLogger(__name__)

WINDOW_TREES = 10
TRACK_TREES = 20


@dataclass(frozen=True)
class _Built:
    """One generation of Annoy files, opened read-only (mmap)."""

    windows: AnnoyIndex | None
    window_items: np.ndarray  # (n, 2) int32: track id, start in ms
    tracks: AnnoyIndex | None
    track_ids: np.ndarray  # (m,) int32


@dataclass(frozen=True)
class _Pending:
    window_vectors: np.ndarray  # (n, dim) float32
    window_items: np.ndarray  # (n, 2) int32
    track_vectors: np.ndarray  # (m, dim) float32
    track_ids: np.ndarray  # (m,) int32


class EmbeddingIndex:
    def __init__(self, folder: Path, dim: int, track_dim: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim  # of window vectors
        self.track_dim = track_dim
        self._stamp = None
        self._manifest: dict = {}
        self._built = _Built(None, np.zeros((0, 2), np.int32), None, np.zeros(0, np.int32))
        self._pending = _empty_pending(dim, track_dim)
        self._removed = np.zeros(0, np.int64)
        self.refresh()

    # ---- reading ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up a new generation if a writer swapped the manifest (cheap when nothing did)."""
        now = stamp(self.folder / "manifest.json")
        if now is None or now == self._stamp:
            return
        manifest = self._read_manifest()
        if manifest.get("built") != self._manifest.get("built"):
            self._built = self._open_built(manifest.get("built"))
        self._pending = self._open_pending(manifest.get("pending", []))
        self._removed = np.asarray(manifest.get("removed", []), np.int64)
        self._manifest, self._stamp = manifest, now

    @property
    def removed(self) -> set[int]:
        return set(self._removed.tolist())

    @property
    def window_count(self) -> int:
        return len(self._built.window_items) + len(self._pending.window_items)

    def search_windows(self, vectors: np.ndarray, n: int, search_k: int = -1
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each query vector: (track ids, window starts in s, cosine similarities) of its
        `n` nearest stored windows."""
        out = []
        built, pending = self._built, self._pending
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
            keep = ~np.isin(items[:, 0], self._removed)
            out.append((items[keep, 0], items[keep, 1] / 1000.0, sims[keep]))
        return out

    def search_tracks(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, cosine similarities) of the `n` nearest tracks, best first."""
        built, pending = self._built, self._pending
        ids, sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if built.tracks is not None:
            found, dist = built.tracks.get_nns_by_vector(vector.tolist(), n, -1, True)
            ids = built.track_ids[np.asarray(found, np.int64)].astype(np.int64)
            sims = 1.0 - np.square(np.asarray(dist, np.float32)) / 2
        if len(pending.track_ids):
            ids = np.concatenate([ids, pending.track_ids])
            sims = np.concatenate([sims, pending.track_vectors @ vector])
        keep = ~np.isin(ids, self._removed)
        ids, sims = ids[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")[:n]
        return ids[order], sims[order]

    def track_vector(self, track_id: int) -> np.ndarray | None:
        built, pending = self._built, self._pending
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

    def add(self, tracks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Store {track id: (window vectors, window starts in s, track vector)}; searchable at
        once (pending)."""
        if not tracks:
            return
        arrays = _pending_arrays(tracks, self.dim, self.track_dim)
        name = f"pending-{uuid.uuid4().hex[:12]}.npz"
        with self._locked(".write.lock") as manifest:  # written under the lock: see `sweep`
            with replacing(self.folder / name) as fh:
                np.savez(fh, window_vectors=arrays.window_vectors.astype(np.float16),
                         window_items=arrays.window_items,
                         track_vectors=arrays.track_vectors.astype(np.float16),
                         track_ids=arrays.track_ids)
            manifest["pending"] = [*manifest.get("pending", []), name]
            self._write_manifest(manifest)
        self.refresh()

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
                replace: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> bool:
        """Fold pending vectors into new Annoy files, dropping removed tracks; False if there
        was nothing to do. One rebuild at a time; adds and queries go on meanwhile.
        `replace`: new vectors for some tracks (after a model change), instead of their old."""
        with self._locked(".build.lock") as start:
            if not force and not replace and not (start.get("pending") or start.get("removed")):
                return False
            generation = start.get("generation", 0) + 1
            removed = set(start.get("removed", []))
            old = self._open_built(start.get("built"))
            pending = self._open_pending(start.get("pending", []))
            if replace:
                extra = _pending_arrays({t: v for t, v in replace.items() if t not in removed},
                                        self.dim, self.track_dim)
                pending = _Pending(*(np.concatenate([
                    getattr(pending, name)[~np.isin(_track_column(getattr(pending, ids)),
                                                    list(replace))], getattr(extra, name)])
                    for name, ids in (("window_vectors", "window_items"),
                                      ("window_items", "window_items"),
                                      ("track_vectors", "track_ids"),
                                      ("track_ids", "track_ids"))))
            built = self._build(generation, old, pending, removed, removed | set(replace or ()))
            with self._locked(".write.lock") as manifest:
                previous = manifest.get("built")
                manifest["built"] = built
                manifest["generation"] = generation
                manifest["pending"] = [p for p in manifest.get("pending", [])
                                       if p not in start.get("pending", [])]
                manifest["removed"] = sorted(set(manifest.get("removed", [])) - removed)
                self._write_manifest(manifest)
            # Readers that still map the old files keep them alive until they let go.
            for name in [*(previous or {}).values(), *start.get("pending", [])]:
                if isinstance(name, str):
                    (self.folder / name).unlink(missing_ok=True)
        self.refresh()
        return True

    def _build(self, generation: int, old: _Built, pending: _Pending, removed: set[int],
               removed_old: set[int]) -> dict:
        names = {"windows": f"windows-{generation}.ann", "window_items": f"windows-{generation}.npy",
                 "tracks": f"tracks-{generation}.ann", "track_ids": f"tracks-{generation}.npy",
                 "dim": self.dim, "track_dim": self.track_dim}
        for kind, items_key, trees, dim, old_index, old_items, new_vectors, new_items in (
                ("windows", "window_items", WINDOW_TREES, self.dim, old.windows, old.window_items,
                 pending.window_vectors, pending.window_items),
                ("tracks", "track_ids", TRACK_TREES, self.track_dim, old.tracks, old.track_ids,
                 pending.track_vectors, pending.track_ids)):
            keep_old = np.nonzero(~np.isin(_track_column(old_items), list(removed_old)))[0]
            keep_new = np.nonzero(~np.isin(_track_column(new_items), list(removed)))[0]
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

    def _open_built(self, names: dict | None) -> _Built:
        if not names:
            return _Built(None, np.zeros((0, 2), np.int32), None, np.zeros(0, np.int32))
        windows = AnnoyIndex(names["dim"], "angular")
        windows.load(str(self.folder / names["windows"]), prefault=False)  # mmap, paged in on use
        window_items = np.load(self.folder / names["window_items"], mmap_mode="r")
        if names.get("track_dim", names["dim"]) != self.track_dim:
            # Built by an older ear whose track vectors were of another kind: until `ear
            # reindex --reembed` replaces them, similar-track searches see only newly added tracks.
            log.warning("%s: track vectors out of date, run `ear reindex --reembed`", self.folder)
            return _Built(windows, window_items, None, np.zeros(0, np.int32))
        tracks = AnnoyIndex(self.track_dim, "angular")
        tracks.load(str(self.folder / names["tracks"]), prefault=False)
        return _Built(windows, window_items, tracks,
                      np.load(self.folder / names["track_ids"], mmap_mode="r"))

    def _open_pending(self, names: list[str]) -> _Pending:
        if not names:
            return _empty_pending(self.dim, self.track_dim)
        parts = [np.load(self.folder / name) for name in names]
        return _Pending(*(np.concatenate([p[key] for p in parts]).astype(
            np.float32 if "vectors" in key else np.int32)
            for key in ("window_vectors", "window_items", "track_vectors", "track_ids")))


def _empty_pending(dim: int, track_dim: int) -> _Pending:
    return _Pending(np.zeros((0, dim), np.float32), np.zeros((0, 2), np.int32),
                    np.zeros((0, track_dim), np.float32), np.zeros(0, np.int32))


def _pending_arrays(tracks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], dim: int,
                    track_dim: int) -> _Pending:
    """{track: (window vectors, starts in s, track vector)} → arrays."""
    if not tracks:
        return _empty_pending(dim, track_dim)
    return _Pending(
        np.concatenate([v for v, _, _ in tracks.values()]).astype(np.float32),
        np.concatenate([np.stack([np.full(len(t), tid), np.round(np.asarray(t) * 1000)], axis=1)
                        for tid, (_, t, _) in tracks.items()]).astype(np.int32),
        np.stack([unit(np.asarray(s, np.float32)) for _, _, s in tracks.values()]),
        np.fromiter(tracks, np.int32, len(tracks)))


def _track_column(items: np.ndarray) -> np.ndarray:
    return items[:, 0] if items.ndim == 2 else items
