"""Query peaks + hash table → verified (track, offset) matches, or none.

Two stages. Voting: each landmark hit votes for (track, stored frame − query frame); the
offsets with the most votes are candidates. Verification: a candidate's stored peaks, laid over
the query at that offset, must land on the query's peaks far more often than chance. Chance is
counted per frequency bin (music and noise both crowd the low bins), which makes the score a
z-score whose scale is the same for every query and catalog: that is what "no match" is decided on.
Music that repeats fits a clip at several offsets; the best track is scanned whole for the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .features import DENSE_QUERY_PEAKS, F_MAX_BIN, FRAME_SECONDS, QUERY_PEAKS, peaks
from .hashes import DENSE_QUERY_PAIRING, QUERY_PAIRING, landmarks
from .hashtable import HashTable, Hits

CANDIDATES = 60  # (track, offset) pairs verified per pass
# Tried in turn while nothing is confidently matched: first the query's usual peaks and
# landmarks; then more of both (a noisy room leaves few of the usual ones standing); then, as a
# recording played ±1 % off speed shifts every peak in time and frequency, the dense peaks
# scaled back by each speed. A clean clip is sure after the first pass.
PASSES = ((1.0, QUERY_PEAKS, QUERY_PAIRING), (1.0, DENSE_QUERY_PEAKS, DENSE_QUERY_PAIRING),
          (0.99, DENSE_QUERY_PEAKS, DENSE_QUERY_PAIRING), (1.01, DENSE_QUERY_PEAKS, DENSE_QUERY_PAIRING))
CONFIDENT_Z = 9.0  # no further passes above this
SURE_Z = 15.0  # beyond doubt: other evidence (the embeddings) is not worth computing
# Once a candidate is beyond doubt, candidates with under this share of its votes are not
# verified: they would not come near it (a clean clip's 60 verifications cost half its time).
_SURE_VOTE_SHARE = 0.25
_REPEATS = 24  # more offsets of the best track verified: music that repeats fits several
# ...of those the scan finds fitting at least this share as well as its best. On 718 clips of
# `ear eval` no right offset was lost at 0.5, and 23 verifications a query became 3.
_SCAN_SHARE = 0.5
_REPEAT_MIN_Z = 5.0  # ...when the best track could be an answer (fusion accepts fits this weak)
_VOTE_KEYS = 8192  # (track, offset) keys ranked: CANDIDATES buckets of ≤63 keys each fit
# Frames tried around a candidate offset when verifying; on a tie the first wins.
_SHIFTS = (0, -1, 1, -2, 2)
_PROPOSAL_SPAN = 36  # frames (±0.58 s) searched around an offset proposed by the embeddings
# A fit below the threshold by up to STANDOUT_DISCOUNT is an answer when it beats every other
# track by STANDOUT_GAP (see `fingerprint_suffices`). Chosen with `ear eval` on 876 clips of
# music not in the catalog (Nexuiz, Frets on Fire, and the model's training soundtracks): 2 of
# them passed this rule (4 at 2.0, 2.5), and it answered 7 more of 223 ULTRA clips, rightly.
STANDOUT_DISCOUNT = 1.5
STANDOUT_GAP = 3.0
_AMBIGUOUS_RATIO = 0.7  # another offset of the same track this close in score is reported too
_MIN_OFFSET_GAP_S = 1.0
_MIN_OVERLAP_FRAMES = int(2.5 / FRAME_SECONDS)  # of clip and track, for a fit to count


@dataclass(frozen=True)
class Candidate:
    track_id: int
    offset_s: float
    score: float  # verification z-score
    confidence: float
    other_offsets_s: tuple[float, ...] = field(default=())


Fit = tuple[float, int, int]  # (z-score, track, offset in frames)


def verified_candidates(samples: np.ndarray, table: HashTable,
                        proposals: Callable[[], list[tuple[int, float]]] | None = None
                        ) -> tuple[list[Fit], list[Fit]]:
    """(candidates, placements): the fit of every candidate verified, in no order, and of the
    best track's other places found by scanning it whole (music that repeats).

    The placements say where in that track the clip is, not whether it is there: a track
    scanned whole offers many more chances to fit by chance than the other tracks had, so
    only the candidates' fits decide the answer.

    `proposals()` gives (track, offset in s) pairs found some other way (the embeddings); they
    are verified too, searching ±0.6 s around the offset since their offsets are coarse. It is
    called only when the landmarks alone found nothing beyond doubt (SURE_Z)."""
    table.refresh()
    verified: list[Fit] = []
    placements: list[Fit] = []
    stored_peaks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # decoded once per query
    proposed: list[tuple[int, float]] | None = None
    best_z, best_at = 0.0, None  # the best fit so far: its track, its pass's grid and candidates
    try:
        found_peaks = {}
        for speed, density, pairing in PASSES:
            if density not in found_peaks:
                found_peaks[density] = peaks(samples, density)[:2]
            t, f = found_peaks[density]
            # Played at `speed`, a frame t was t*speed and a bin f was f/speed in the original.
            st = np.round(t * speed).astype(np.int64)
            sf = np.clip(np.round(f / speed), 0, F_MAX_BIN - 1).astype(np.int64)
            hashes, frames = landmarks(st, sf, pairing)
            grid = _QueryGrid(st, sf)
            tracks, offsets, votes_of = vote(table.lookup(hashes), frames)
            first_here, sure_votes, tried = len(verified), 0, set()
            for track, offset, votes in zip(tracks[:CANDIDATES].tolist(), offsets[:CANDIDATES].tolist(),
                                            votes_of[:CANDIDATES].tolist()):
                if votes < _SURE_VOTE_SHARE * sure_votes:
                    break
                tried.add((track, offset))
                verified.append(_fit(grid, stored_peaks, table, track, offset))
                if verified[-1][0] >= SURE_Z and not sure_votes:
                    sure_votes = votes
            if proposals is not None and max(verified, default=(0.0,))[0] < SURE_Z:
                # The embeddings hear through a speed error: their proposals are tried at
                # every speed, as the landmarks' candidates are.
                if proposed is None:
                    proposed = proposals()
                for track, offset_s in proposed:
                    centre = int(round(offset_s / FRAME_SECONDS))
                    verified.append(max(
                        _fit(grid, stored_peaks, table, track, offset) for offset in
                        range(centre - _PROPOSAL_SPAN, centre + _PROPOSAL_SPAN + 1, len(_SHIFTS))))
            here_z, here_track, _ = max(verified[first_here:], default=(0.0, -1, 0))
            if here_z > best_z:
                best_z, best_at = here_z, (here_track, grid, tried)
            if best_z >= CONFIDENT_Z:
                break
        if best_at is not None and best_z >= _REPEAT_MIN_Z:
            # Where the music repeats, the true offset may have had fewer votes than other
            # repeats of the same track, or lost them to the cap on common hashes: the
            # query's peaks laid over the whole track say which of its offsets to verify too.
            track, grid, tried = best_at
            repeats = [o for o in grid.scan(*stored_peaks[track]) if (track, o) not in tried]
            placements = [_fit(grid, stored_peaks, table, track, o) for o in repeats[:_REPEATS]]
    finally:
        table.release()  # the pages this query touched: see HashTable
    return verified, placements


def _fit(grid: "_QueryGrid", stored_peaks: dict, table: HashTable, track: int,
         offset: int) -> tuple[float, int, int]:
    """(z, track, best offset) of one candidate; each track's peaks are read once per query."""
    if track not in stored_peaks:
        stored_peaks[track] = table.peaks_of(track)
    z, shift = grid.verify(*stored_peaks[track], offset)
    return z, track, offset - shift


def vote(hits: Hits, query_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tracks, offsets in frames, votes): the best offset in each (track, second of offsets),
    most votes first."""
    if hits.track_id.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    offsets = hits.frame - query_frames[hits.query_index].astype(np.int64)
    keys = np.sort((hits.track_id << 32) | (offsets + (1 << 31)))
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    uniq = keys[starts]
    counts = np.diff(starts, append=keys.size)
    # Votes within ±1 frame pooled: the neighbours of a key, where present, are
    # the entries next to it in sorted order.
    pooled = counts.copy()
    pooled[1:] += np.where(uniq[1:] - uniq[:-1] == 1, counts[:-1], 0)
    pooled[:-1] += np.where(uniq[1:] - uniq[:-1] == 1, counts[1:], 0)
    # Only the best keys can win a bucket among the first few hundred; sorting all of them
    # was most of a query's time in a large catalog.
    if pooled.size > _VOTE_KEYS:
        top = np.argpartition(-pooled, _VOTE_KEYS)[:_VOTE_KEYS]
        uniq, pooled = uniq[top], pooled[top]
    order = np.lexsort((uniq, -pooled))  # most votes first; ties by track and offset
    tracks = (uniq[order] >> 32).astype(np.int64)
    offsets = (uniq[order] & 0xFFFFFFFF).astype(np.int64) - (1 << 31)
    buckets = (tracks << 32) | ((offsets // int(_MIN_OFFSET_GAP_S / FRAME_SECONDS)) + (1 << 31))
    first = np.sort(np.unique(buckets, return_index=True)[1])
    return tracks[first], offsets[first], pooled[order][first]


class _QueryGrid:
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
        gap = int(_MIN_OFFSET_GAP_S / FRAME_SECONDS)
        at = np.flatnonzero((score >= _window_max(score, gap - 1)) & (score > 0)
                            & (score >= _SCAN_SHARE * score.max()))
        kept: list[int] = []  # equal neighbours are both local maxima: keep the first
        for offset in (at[np.argsort(-score[at], kind="stable")] - self.frames).tolist():
            if all(abs(offset - other) >= gap for other in kept):
                kept.append(offset)
        return kept

    def verify(self, ref_t: np.ndarray, ref_f: np.ndarray, offset: int) -> tuple[float, int]:
        """(z-score, best shift) of the stored peaks laid over the query at `offset` (stored
        frame − query frame); the best fit is at offset − shift."""
        lo = np.searchsorted(ref_t, offset)
        hi = np.searchsorted(ref_t, offset + self.frames)
        rt, rf = ref_t[lo:hi] - offset, ref_f[lo:hi] + 1
        # A clip hanging mostly off either end of the track is judged on a sliver of it, where
        # chance fits look like matches (an unknown clip did, laid 8.7 s before a track began).
        overlap = min(offset + self.frames, int(ref_t[-1]) + 1 if ref_t.size else 0) - max(offset, 0)
        if rt.size == 0 or overlap < min(self.frames, _MIN_OVERLAP_FRAMES):
            return 0.0, 0
        # Evidence is counted per stored frame (did any of its peaks land?), so that one
        # broadband onset, which fills a whole column with peaks, counts once and not tenfold.
        frame_ids = np.unique(rt, return_inverse=True)[1]
        miss_all = np.exp(np.bincount(frame_ids, weights=np.log1p(-self.chance[rf])))
        q = 1.0 - miss_all
        expected, spread = q.sum(), np.sqrt(max(float((q * (1 - q)).sum()), 1e-9))
        rows = rt[None, :] + np.array(_SHIFTS)[:, None] + 1  # one row per shift tried
        inside = (rows >= 0) & (rows < self.grid.shape[0])
        landed = self.grid[np.clip(rows, 0, self.grid.shape[0] - 1), rf[None, :]] & inside
        n_frames = frame_ids[-1] + 1 if frame_ids.size else 0
        per_frame = np.zeros((len(_SHIFTS), n_frames), bool)
        per_frame[np.nonzero(landed)[0], frame_ids[np.nonzero(landed)[1]]] = True
        counts = per_frame.sum(axis=1)
        i = int(np.argmax(counts))
        best, best_shift = int(counts[i]), _SHIFTS[i]
        return (best - expected) / spread, best_shift


def _window_max(x: np.ndarray, radius: int) -> np.ndarray:
    """max(x[i − radius : i + radius + 1]) for every i, in log2(radius) vectorised steps."""
    window = 2 * radius + 1
    out = np.concatenate([np.full(radius, -np.inf), x, np.full(radius, -np.inf)])
    width = 1  # out[i] = max(padded x[i : i + width])
    while width * 2 <= window:
        out[:-width] = np.maximum(out[:-width], out[width:])
        width *= 2
    if window > width:  # the rest by a second window, overlapping the first
        out[:width - window] = np.maximum(out[:width - window], out[window - width:])
    return out[:x.size]


def fingerprint_suffices(z: float, runner_up_z: float, threshold: float) -> bool:
    """Is a track's fit an answer by itself? Either its z-score reaches the threshold, or it
    comes close and stands far above every other track's (`runner_up_z`): for audio that is
    not in the catalog, the best and second-best tracks fit about equally badly."""
    return z >= threshold or (z >= threshold - STANDOUT_DISCOUNT and z - runner_up_z >= STANDOUT_GAP)


def runner_ups(best: dict[int, tuple]) -> dict[int, float]:
    """{track: the best z-score of any other track} from `best_per_track`'s answer."""
    ranked = sorted(((fit[0], track) for track, fit in best.items()), reverse=True)
    if not ranked:
        return {}
    top_z, top_track = ranked[0]
    second_z = ranked[1][0] if len(ranked) > 1 else 0.0
    return {track: second_z if track == top_track else top_z for track in best}


def rank(best: dict[int, tuple[float, float, tuple[float, ...]]], threshold: float,
         top_k: int) -> list[Candidate]:
    """The tracks that `best_per_track` found whose fit is an answer, best first."""
    others = runner_ups(best)
    out = [Candidate(track, offset, round(z, 2), confidence(z), repeats)
           for track, (z, offset, repeats) in best.items()
           if fingerprint_suffices(z, others[track], threshold)]
    out.sort(key=lambda c: -c.score)
    return out[:top_k]


def best_per_track(verified: list[Fit], placements: Sequence[Fit] = ()
                   ) -> dict[int, tuple[float, float, tuple[float, ...]]]:
    """{track: (best z of its candidates, the offset in s of its best fit, other offsets in s
    that fit almost as well)}; `placements` only place a track (see `verified_candidates`)."""
    decided: dict[int, float] = {}
    for z, track, _ in verified:
        decided[track] = max(decided.get(track, 0.0), float(z))
    found: dict[int, list[tuple[float, int]]] = {}
    for z, track, offset in sorted([*verified, *placements], reverse=True):
        found.setdefault(track, []).append((float(z), offset))
    out = {}
    for track, fits in found.items():
        z, offset = fits[0]
        others: list[int] = []
        for z2, o2 in fits[1:]:
            if z > 0 and z2 >= _AMBIGUOUS_RATIO * z and all(
                    abs(o2 - o) * FRAME_SECONDS >= _MIN_OFFSET_GAP_S for o in [offset, *others]):
                others.append(o2)
        out[track] = (decided.get(track, 0.0), _seconds(offset), tuple(_seconds(o) for o in sorted(others)))
    return out


def _seconds(frames: int) -> float:
    return round(frames * FRAME_SECONDS, 3)


def confidence(z: float) -> float:
    """Probability that a match with this z-score is right (logistic fit of `ear eval` runs)."""
    return round(float(1.0 / (1.0 + np.exp(-(z - _CONF_MID) * _CONF_SLOPE))), 3)


_CONF_MID, _CONF_SLOPE = 5.5, 1.5
