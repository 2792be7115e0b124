"""Spectral peaks → landmark hashes: each peak paired with a few that follow it (Wang 2003).

A hash packs (anchor bin, bin difference, frame difference) into HASH_BITS bits; its time is
the anchor's frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import LANDMARK_PEAKS

HASH_BITS = 22
_F_BITS, _DF_BITS, _DT_BITS = 8, 7, 7
MAX_DF = (1 << (_DF_BITS - 1)) - 1  # ±63 bins
MIN_DT, MAX_DT = 1, 63  # frames: up to 1 s ahead
_LOOKAHEAD = 24  # peaks examined after each anchor


@dataclass(frozen=True)
class Pairing:
    fanout: int


TRACK_PAIRING = Pairing(fanout=3)
QUERY_PAIRING = Pairing(fanout=10)
DENSE_QUERY_PAIRING = Pairing(fanout=15)  # with DENSE_QUERY_PEAKS


def landmarks(t: np.ndarray, f: np.ndarray, pairing: Pairing) -> tuple[np.ndarray, np.ndarray]:
    """Pair peaks (sorted by frame) into (hash uint32, anchor frame int32) arrays."""
    n = t.size
    if n < 2:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    t = t.astype(np.int64)
    f = f.astype(np.int64)
    steps = np.arange(1, _LOOKAHEAD + 1)
    j = np.arange(n)[:, None] + steps[None, :]
    valid = j < n
    j = np.minimum(j, n - 1)
    dt = t[j] - t[:, None]
    df = f[j] - f[:, None]
    valid &= (dt >= MIN_DT) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
    # The nearest `fanout` valid targets of each anchor.
    valid &= np.cumsum(valid, axis=1) <= pairing.fanout
    anchor, step = np.nonzero(valid)
    target = j[anchor, step]
    hashes = (
        (f[anchor] << (_DF_BITS + _DT_BITS))
        | ((f[target] - f[anchor] + MAX_DF) << _DT_BITS)
        | (t[target] - t[anchor])
    )
    return hashes.astype(np.uint32), t[anchor].astype(np.int32)


class TrackLandmarks:
    """A catalog track's sparse landmarks (from its strongest peaks), built as its peaks come in
    a block at a time. An anchor's partners lie at most MAX_DT frames ahead, so the anchors
    further than that before the blocks' end are final; the rest wait, with the peaks they may
    pair with, for the next block or the end. The result is that of one pass over the whole."""

    def __init__(self) -> None:
        self._t = self._f = np.zeros(0, np.int32)  # peaks of the anchors not yet final
        self._hashes: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []

    def add(self, t: np.ndarray, f: np.ndarray, rank: np.ndarray, until: int) -> None:
        """Peaks of frames before `until`, after those added so far."""
        strong = rank < LANDMARK_PEAKS
        self._t = np.concatenate([self._t, t[strong]])
        self._f = np.concatenate([self._f, f[strong]])
        self._pair(final_before=until - MAX_DT)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(hash uint32, anchor frame int32) of every anchor, the track having ended."""
        self._pair(final_before=None)
        return np.concatenate(self._hashes), np.concatenate(self._frames)

    def _pair(self, final_before: int | None) -> None:
        hashes, frames = landmarks(self._t, self._f, TRACK_PAIRING)
        waiting = self._t.size if final_before is None else np.searchsorted(self._t, final_before)
        final = np.ones(frames.size, bool) if final_before is None else frames < final_before
        self._hashes.append(hashes[final])
        self._frames.append(frames[final])
        self._t, self._f = self._t[waiting:], self._f[waiting:]
