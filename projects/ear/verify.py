"""Peak by peak: does a stored track's stretch lie over the query's peaks more than chance?

The query's peaks become a time × bin grid (`QueryGrid`). `verify` lays a stored track's peaks
over it at one offset and counts the stored frames with a peak that lands; chance is counted per
frequency bin (music and noise both crowd the low bins), which makes the score a z-score whose
scale is the same for every query and catalog: that is what "no match" is decided on. `scan`
finds every offset where the query fits a whole stored track (music that repeats).
"""
from __future__ import annotations

import numpy as np

from .features import F_MAX_BIN, FRAME_SECONDS, running_max

MIN_OFFSET_GAP_S = 1.0  # two offsets of one track closer than this are one place
# Frames tried around a candidate offset when verifying; on a tie the first wins.
SHIFTS = (0, -1, 1, -2, 2)
# The scan's places worth verifying fit at least this share as well as its best: no right
# offset was lost at this share, and far fewer were verified (docs/calibration.md).
_SCAN_SHARE = 0.5
# A fit must overlap the track by this much: on a sliver of it chance fits look like matches.
_MIN_OVERLAP_FRAMES = int(2.5 / FRAME_SECONDS)


class QueryGrid:
    """The query's peaks as a time × bin grid, each peak widened by ±1 frame and ±1 bin
    (reverb and coding move peaks a little)."""

    def __init__(self, t: np.ndarray, f: np.ndarray):
        self.t, self.f = t, f
        self.frames = int(t.max()) + 1 if t.size else 0
        self.grid = np.zeros((self.frames + 2, F_MAX_BIN + 2), bool)
        for dt in (-1, 0, 1):
            for df in (-1, 0, 1):
                self.grid[np.clip(t + dt + 1, 0, self.frames + 1), f + df + 1] = True
        # Chance that a stored peak in bin b lands on a query peak: how much of row b is covered.
        self.chance = self.grid[1:self.frames + 1].mean(axis=0)

    def scan(self, ref_t: np.ndarray, ref_f: np.ndarray) -> list[int]:
        """Offsets (stored frame − query frame) where the query fits a stored track, best first,
        ≥ 1 s apart, fitting at least _SCAN_SHARE as well as the best: every query peak paired
        with every stored peak within a bin of it, their time differences counted, and the
        counts weighed against what chance would give."""
        if ref_t.size == 0 or self.t.size == 0:
            return []
        order = np.argsort(self.f, kind="stable")
        qt = self.t[order]
        # The query peaks in bins f−1..f+1 are qt[below[f]:upto[f + 2]].
        upto = np.cumsum(np.bincount(self.f + 1, minlength=F_MAX_BIN + 2))
        below = np.concatenate([[0], upto])
        lo, n_pairs = below[ref_f], upto[ref_f + 2] - below[ref_f]
        total = int(n_pairs.sum())
        if total == 0:
            return []
        first = np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        query_index = np.repeat(lo, n_pairs) + np.arange(total) - first
        # Indexed by offset + frames: from the clip starting before the track to past its end.
        length = int(ref_t[-1]) + self.frames + 2
        shifted = np.repeat(ref_t, n_pairs) - qt[query_index] + self.frames
        landed = np.convolve(np.bincount(shifted, minlength=length), np.ones(3), "same")  # ±1 frame
        # Chance: a stored peak with n query peaks near its bin meets one of them within
        # ±1 frame at 3n of the query's offsets; summed over the stored peaks the clip covers.
        chance = np.bincount(ref_t, weights=n_pairs * 3.0 / max(self.frames, 1), minlength=length)
        covered = np.concatenate([[0.0], np.cumsum(chance)])
        starts = np.clip(np.arange(length) - self.frames, 0, length)
        expected = covered[np.minimum(starts + self.frames, length)] - covered[starts]
        score = (landed - expected) / np.sqrt(expected + 1.0)
        gap = int(MIN_OFFSET_GAP_S / FRAME_SECONDS)
        at = np.flatnonzero((score >= running_max(score, gap - 1)) & (score > 0)
                            & (score >= _SCAN_SHARE * score.max()))
        kept: list[int] = []  # equal neighbours are both local maxima: keep the first
        for offset in (at[np.argsort(-score[at], kind="stable")] - self.frames).tolist():
            if all(abs(offset - other) >= gap for other in kept):
                kept.append(offset)
        return kept

    def verify(self, ref_t: np.ndarray, ref_f: np.ndarray, offsets: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(z-scores, best shifts) of the stored peaks laid over the query at each of `offsets`
        (stored frame − query frame): the best fit at an offset is at offset − shift. All the
        offsets at once, for offsets close together (the embeddings' proposals are verified at
        a span of them): one call costs every stored frame from the first to the last."""
        offsets = np.asarray(offsets, np.int64)
        z, shifts = np.zeros(offsets.size), np.zeros(offsets.size, np.int64)
        lo = np.searchsorted(ref_t, offsets.min())
        hi = np.searchsorted(ref_t, offsets.max() + self.frames)
        rt, rf = ref_t[lo:hi].astype(np.int64), ref_f[lo:hi] + 1
        # A clip hanging mostly off either end of the track is judged on a sliver of it, where
        # chance fits look like matches (an unknown clip once did, laid mostly before a track).
        track_end = int(ref_t[-1]) + 1 if ref_t.size else 0
        overlap = np.minimum(offsets + self.frames, track_end) - np.maximum(offsets, 0)
        judged = overlap >= min(self.frames, _MIN_OVERLAP_FRAMES)
        if rt.size == 0 or not judged.any():
            return z, shifts
        # Evidence is counted per stored frame (did any of its peaks land?), so that one
        # broadband onset, which fills a whole column with peaks, counts once and not tenfold.
        starts = np.flatnonzero(np.diff(rt, prepend=-1))  # of each stored frame's peaks (sorted)
        frames, frame_ids = rt[starts], np.cumsum(np.diff(rt, prepend=rt[0]) != 0)
        q = 1.0 - np.exp(np.add.reduceat(np.log1p(-self.chance[rf]), starts))
        in_window = ((frames[None, :] >= offsets[:, None])
                     & (frames[None, :] < offsets[:, None] + self.frames))  # (offset, frame)
        expected = (q * in_window).sum(axis=1)
        spread = np.sqrt(np.maximum((q * (1 - q) * in_window).sum(axis=1), 1e-9))
        # rows[offset, shift, peak]: the grid row each stored peak lands on
        rows = (rt[None, None, :] - offsets[:, None, None] + np.array(SHIFTS)[None, :, None] + 1)
        inside = (rows >= 0) & (rows < self.grid.shape[0]) & in_window[:, None, frame_ids]
        landed = self.grid[np.clip(rows, 0, self.grid.shape[0] - 1), rf[None, None, :]] & inside
        counts = np.logical_or.reduceat(landed, starts, axis=2).sum(axis=2)  # frames with a landing
        best = np.argmax(counts, axis=1)  # on a tie the first of SHIFTS
        found = (counts[np.arange(offsets.size), best] - expected) / spread
        judged &= in_window.any(axis=1)
        z[judged] = found[judged]
        shifts[judged] = np.array(SHIFTS)[best[judged]]
        return z, shifts
