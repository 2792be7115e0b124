"""The hash table's files and their encodings: landmark keys, and the peaks that verify a fit.

A landmark is one uint64 key: hash (22 bits) | track id (20 bits) | frame (22 bits), so that
sorting the keys sorts by hash, and a hash's landmarks are one run of the file. A key file is
mapped read-only; its fence (the first key of every 4 KiB page, held in memory: 1/512 of the
file) finds a hash's run in two page reads. A track's peaks are 2 bytes each: frame step from
the previous peak, bin.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator

import numpy as np

TRACK_BITS, TIME_BITS = 20, 22
MAX_TRACK_ID = (1 << TRACK_BITS) - 1
MAX_FRAME = (1 << TIME_BITS) - 1
TRACK_SHIFT = TIME_BITS
HASH_SHIFT = TRACK_BITS + TIME_BITS
KEY_BYTES = 8
_FENCE = 4096 // KEY_BYTES  # keys a page
_MERGE_SLICES = 64  # a merge holds 1/64 of the keys in memory at a time
_PEAK_SKIP = 255  # a bin no peak has: "no peak, just advance 255 frames"


def pack(hashes: np.ndarray, track_id: int, frames: np.ndarray) -> np.ndarray:
    """Sorted uint64 keys for one track's landmarks."""
    if not 0 < track_id <= MAX_TRACK_ID:
        raise ValueError(f"track id {track_id} outside 1..{MAX_TRACK_ID}")
    frames = np.minimum(frames.astype(np.uint64), MAX_FRAME)
    keys = (hashes.astype(np.uint64) << np.uint64(HASH_SHIFT)) | (
        np.uint64(track_id) << np.uint64(TRACK_SHIFT)) | frames
    keys.sort()
    return keys


def encode_peaks(frames: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Peaks sorted by frame → uint16 (frame step << 8 | bin), with skip entries for long gaps."""
    steps = np.diff(frames.astype(np.int64), prepend=0)
    skips = np.maximum(steps - 1, 0) // 255  # skip entries needed before each peak
    out = np.full(frames.size + int(skips.sum()), (255 << 8) | _PEAK_SKIP, np.uint16)
    positions = np.arange(frames.size) + np.cumsum(skips)
    out[positions] = ((steps - 255 * skips) << 8 | bins).astype(np.uint16)
    return out


def decode_peaks(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    encoded = np.asarray(encoded)
    frames = np.cumsum(encoded >> 8, dtype=np.int64)
    bins = (encoded & 0xFF).astype(np.int64)
    real = bins != _PEAK_SKIP
    return frames[real], bins[real]


class Mapped:
    """A read-only file mapping whose pages can be handed back to the page cache."""

    def __init__(self, path: Path, dtype, count: int):
        self._map = None
        if count == 0:  # an empty file cannot be mapped
            self.array = np.zeros(0, dtype)
            return
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        self.array = np.frombuffer(self._map, dtype, count)

    def release(self) -> None:
        """Unmap the pages touched so far (they stay cached by the kernel: touching them again
        costs a minor fault, not a read)."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)


class KeyFile(Mapped):
    """Sorted landmark keys and their fence: the first key of every page."""

    def __init__(self, path: Path, count: int):
        super().__init__(path, np.uint64, count)
        self.name = path.name
        self.fence = self.array[::_FENCE].copy()
        self.release()  # reading the fence touched every page

    def first_at_least(self, needles: np.ndarray) -> np.ndarray:
        """For each needle, the index of the first key ≥ it (np.searchsorted's left side)."""
        keys, n = self.array, self.array.size
        page = np.searchsorted(self.fence, needles)  # fence keys below the needle
        # The answer lies after the last fence key below the needle, up to the next fence key.
        lo = np.where(page > 0, (page - 1) * _FENCE + 1, 0)
        hi = np.minimum(page * _FENCE, n)
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) // 2
            below = open_ & (keys[np.minimum(mid, n - 1)] < needles)
            lo = np.where(below, mid + 1, lo)
            hi = np.where(open_ & ~below, mid, hi)


def offsets(parts: list[np.ndarray]) -> list[int]:
    return np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(int).tolist()


def merged_slices(arrays: list[np.ndarray], removed: np.ndarray) -> Iterator[np.ndarray]:
    """The sorted union of sorted key arrays without removed tracks, one hash range at a time,
    so that a merge holds only a slice of the table in memory."""
    bounds = [np.uint64(i) << np.uint64(64 - 6) for i in range(_MERGE_SLICES)]
    for i in range(_MERGE_SLICES):
        parts = []
        for arr in arrays:
            lo = np.searchsorted(arr, bounds[i])
            hi = np.searchsorted(arr, bounds[i + 1]) if i + 1 < _MERGE_SLICES else arr.size
            parts.append(np.asarray(arr[lo:hi]))
        block = np.concatenate(parts)
        if removed.size:
            ids = (block >> np.uint64(TRACK_SHIFT)) & np.uint64(MAX_TRACK_ID)
            block = block[~np.isin(ids, removed)]
        block.sort()
        yield block
