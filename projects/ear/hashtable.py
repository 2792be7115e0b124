"""The landmark store: immutable sorted segments on disk, memory-mapped, 8 bytes a landmark.

A segment is a file of sorted landmark keys and a file of its tracks' peaks (`segments`). A
lookup finds each hash's run of keys in every segment through its fence, touching two pages a
hash; after each query the mapped pages are handed back to the page cache (madvise), so the
process's private memory does not grow with the catalog or with the number of queries. Adding
tracks writes a new segment; small segments are merged (by hash range, so a merge never holds
more than a slice in memory). Removal records the track as removed; merges drop its keys.

`manifest.json` names the live segments. It is replaced atomically (`storage.replacing`), so
readers see either the old set of files or the new one. Writers serialise on an flock.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .segments import (HASH_SHIFT, MAX_FRAME, MAX_TRACK_ID, TRACK_SHIFT, KeyFile, Mapped,
                       decode_peaks, merged_slices, offsets)
from .storage import locked, read_json, replacing, stamp, write_json

MAX_HITS = 250_000  # per query: tens of ms of voting and ~10 MB, whatever the catalog size


@dataclass
class SegmentFiles:
    """One segment, as the manifest names it: its files and what they hold."""

    file: str  # sorted uint64 landmark keys
    count: int  # keys in it
    tracks: list[int]  # the tracks whose peaks `peaks_file` holds, ascending
    peaks_file: str  # their encoded peaks, one track after another
    peak_offsets: list[int]  # where tracks[i]'s peaks start in peaks_file; one more marks the end


@dataclass
class Manifest:
    generation: int = 0
    next_track_id: int = 1  # above every id an older ear handed out from here (ids.py)
    segments: list[SegmentFiles] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        return cls(**{**data, "segments": [SegmentFiles(**s) for s in data.get("segments", [])]})


@dataclass
class Hits:
    query_index: np.ndarray  # which query landmark matched
    track_id: np.ndarray
    frame: np.ndarray  # the stored landmark's frame


@dataclass(frozen=True)
class _View:
    """One consistent reading of the store, swapped whole so that a thread never sees a
    manifest with another manifest's files."""

    manifest: Manifest
    stamp: tuple | None  # of the manifest file read
    key_files: list[KeyFile]
    peak_files: list[Mapped]
    peaks: dict[int, np.ndarray]  # track → its encoded peaks (a slice of a mapped file)
    removed: np.ndarray


class HashTable:
    """Open (and create) the store in `directory`. Reads are lock-free; writes take the lock."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._manifest_path = self.directory / "manifest.json"
        self._view = _View(Manifest(), None, [], [], {}, np.zeros(0, np.int64))
        self._refreshing = threading.Lock()  # one thread at a time reads a new manifest
        self._draft = Manifest()  # what a writer is changing, saved by _save
        self._obsolete: list[str] = []
        self.refresh()

    # ---- reading -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up changes another process made (cheap when nothing changed: one stat)."""
        with self._refreshing:
            now = stamp(self._manifest_path)
            if now is not None and now != self._view.stamp:
                self._view = self._read_view(now)

    def _read_view(self, now: tuple) -> _View:
        manifest = Manifest.from_json(read_json(self._manifest_path))
        # Segments are immutable: the ones this process has already opened are reused.
        opened = {key_file.name: key_file for key_file in self._view.key_files}
        key_files, peak_files, peaks = [], [], {}
        for seg in manifest.segments:
            key_files.append(opened.get(seg.file) or KeyFile(self.directory / seg.file, seg.count))
            peak_file = Mapped(self.directory / seg.peaks_file, np.uint16, seg.peak_offsets[-1])
            peak_files.append(peak_file)
            for j, track in enumerate(seg.tracks):
                peaks[track] = peak_file.array[seg.peak_offsets[j]:seg.peak_offsets[j + 1]]
        return _View(manifest, now, key_files, peak_files, peaks,
                     np.array(sorted(manifest.removed), np.int64))

    @property
    def manifest(self) -> Manifest:
        """The manifest as last read (do not change it: writers change their own copy)."""
        return self._view.manifest

    @property
    def has_manifest(self) -> bool:
        return self._manifest_path.exists()

    @property
    def landmark_count(self) -> int:
        return sum(seg.count for seg in self.manifest.segments)

    def track_ids(self) -> set[int]:
        ids = {t for seg in self.manifest.segments for t in seg.tracks}
        return ids - set(self.manifest.removed)

    def peaks_of(self, track_id: int) -> tuple[np.ndarray, np.ndarray]:
        """A stored track's peaks as (frame, bin) arrays, sorted by frame."""
        encoded = self._view.peaks.get(track_id)
        if encoded is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return decode_peaks(encoded)

    def release(self) -> None:
        """Hand the pages the last queries touched back to the page cache (call after a query)."""
        for mapped in self._view.key_files + self._view.peak_files:
            mapped.release()

    def lookup(self, hashes: np.ndarray, max_hits: int = MAX_HITS) -> Hits:
        """Stored landmarks whose hash is among `hashes` (of removed tracks, none).

        When there would be more than `max_hits`, the commonest hashes are left out: they say
        least about which track this is, and the cap bounds a query's time and memory whatever
        the catalog's size.
        """
        self.refresh()
        view = self._view
        # Searched in sorted order: neighbouring needles touch the same pages of a segment.
        by_hash = np.argsort(hashes, kind="stable")
        hashes = hashes[by_hash]
        lo_keys = hashes.astype(np.uint64) << np.uint64(HASH_SHIFT)
        hi_keys = (hashes.astype(np.uint64) + np.uint64(1)) << np.uint64(HASH_SHIFT)
        ranges = []
        for key_file in view.key_files:
            if key_file.array.size:
                bounds = key_file.first_at_least(np.concatenate([lo_keys, hi_keys]))
                lo, hi = bounds[:hashes.size], bounds[hashes.size:]
                ranges.append((key_file.array, lo, hi - lo))
        if not ranges:
            empty = np.zeros(0, np.int64)
            return Hits(empty, empty, empty)
        per_hash = sum(counts for _, _, counts in ranges)
        order = np.argsort(per_hash, kind="stable")
        keep = np.zeros(hashes.size, bool)
        keep[order[np.cumsum(per_hash[order]) <= max_hits]] = True
        parts_q, parts_v = [], []
        for keys, lo, counts in ranges:
            counts = np.where(keep, counts, 0)
            total = int(counts.sum())
            if total == 0:
                continue
            parts_q.append(np.repeat(by_hash, counts))
            starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
            parts_v.append(np.asarray(keys[starts + np.arange(total)]))
        if not parts_v:
            empty = np.zeros(0, np.int64)
            return Hits(empty, empty, empty)
        values = np.concatenate(parts_v)
        query_index = np.concatenate(parts_q)
        track_id = ((values >> np.uint64(TRACK_SHIFT)) & np.uint64(MAX_TRACK_ID)).astype(np.int64)
        frame = (values & np.uint64(MAX_FRAME)).astype(np.int64)
        if view.removed.size:
            live = ~np.isin(track_id, view.removed)
            query_index, track_id, frame = query_index[live], track_id[live], frame[live]
        return Hits(query_index, track_id, frame)

    # ---- writing -------------------------------------------------------------------------
    @contextmanager
    def writing(self, wait: bool = True) -> Iterator["HashTable | None"]:
        """Hold the writers' lock, with the newest manifest loaded (None: `wait` was False and
        another writer holds it)."""
        with locked(self.directory / "lock", wait) as held:
            if not held:
                yield None
                return
            self.refresh()
            # From the file, not from the view: the draft must be what is on disk now.
            self._draft = Manifest.from_json(read_json(self._manifest_path) or {})
            self._sweep()
            yield self

    def _sweep(self) -> None:
        """Delete files no manifest names: leftovers of a writer that crashed."""
        named = {f for s in self._draft.segments for f in (s.file, s.peaks_file)}
        for path in [*self.directory.glob("seg-*"), *self.directory.glob("*.tmp")]:
            if path.name not in named:
                path.unlink(missing_ok=True)

    def add(self, tracks: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Store tracks as one new segment (inside `writing()`).

        `tracks` maps a track id to its (packed landmark keys, encoded peaks).
        """
        ids = sorted(tracks)
        keys = np.concatenate([tracks[t][0] for t in ids]) if ids else np.zeros(0, np.uint64)
        keys.sort()
        peaks = [tracks[t][1] for t in ids]
        name, _ = self._write_segment([keys])
        peaks_file, _ = self._write_segment(peaks)
        self._draft.segments.append(SegmentFiles(name, int(keys.size), ids, peaks_file, offsets(peaks)))
        self._compact()
        self._save()

    def remove(self, track_ids: list[int]) -> None:
        """Mark tracks removed (inside `writing()`); their keys go at the next merge."""
        self._draft.removed = sorted(set(self._draft.removed) | set(track_ids))
        self._save()

    def merge_all(self) -> None:
        """Merge every segment into one, dropping removed tracks (inside `writing()`)."""
        if len(self._draft.segments) > 1 or self._draft.removed:
            self._merge(list(range(len(self._draft.segments))))
        self._save()

    def _compact(self) -> None:
        # Merge the newest segments while the newest is at least half the size of the one
        # before it: segment sizes grow geometrically, so there are O(log n) of them and each
        # landmark is rewritten O(log n) times, never the whole table on every add.
        segs = self._draft.segments
        while len(segs) >= 2 and segs[-1].count * 2 >= segs[-2].count:
            self._merge([len(segs) - 2, len(segs) - 1])
            segs = self._draft.segments

    def _merge(self, positions: list[int]) -> None:
        chosen = [self._draft.segments[p] for p in positions]
        arrays = [Mapped(self.directory / s.file, np.uint64, s.count).array for s in chosen]
        removed = np.array(self._draft.removed, np.uint64)
        name, total = self._write_segment(merged_slices(arrays, removed))
        removed_set = set(self._draft.removed)
        peak_parts: list[tuple[int, np.ndarray]] = []
        for s in chosen:
            peaks = Mapped(self.directory / s.peaks_file, np.uint16, s.peak_offsets[-1]).array
            for j, track in enumerate(s.tracks):
                if track not in removed_set:
                    peak_parts.append((track, peaks[s.peak_offsets[j]:s.peak_offsets[j + 1]]))
        peak_parts.sort(key=lambda item: item[0])
        parts = [part for _, part in peak_parts]
        peaks_file, _ = self._write_segment(parts)
        first = min(positions)
        kept = [s for p, s in enumerate(self._draft.segments) if p not in positions]
        kept.insert(first, SegmentFiles(name, total, [track for track, _ in peak_parts], peaks_file,
                                   offsets(parts)))
        self._draft.segments = kept
        # A removed id that no segment holds any more need not be remembered.
        still_held = {t for s in kept for t in s.tracks}
        self._draft.removed = [t for t in self._draft.removed if t in still_held]
        self._obsolete += [f for s in chosen for f in (s.file, s.peaks_file)]

    def _write_segment(self, chunks: Iterable[np.ndarray]) -> tuple[str, int]:
        """Write arrays one after another into a new durable file; (its name, items written)."""
        self._draft.generation += 1
        name = f"seg-{self._draft.generation:08d}.bin"
        count = 0
        with replacing(self.directory / name) as out:
            for chunk in chunks:
                out.write(np.asarray(chunk).tobytes())
                count += chunk.size
        return name, count

    def _save(self) -> None:
        write_json(self._manifest_path, asdict(self._draft))
        # Files replaced by a merge go only once the manifest that no longer names them is
        # durable; readers that still map them keep their pages until they refresh.
        for name in self._obsolete:
            (self.directory / name).unlink(missing_ok=True)
        self._obsolete = []
        self.refresh()
