"""Query peaks + hash table → verified (track, offset) fits, and each track's best.

Voting: each landmark hit votes for (track, stored frame − query frame); the offsets with the
most votes are candidates. Each candidate is verified peak by peak (`verify`); its z-score
decides whether the track is an answer (`fingerprint_suffices`). Music that repeats fits a
clip at several offsets: the best track is scanned whole for the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .features import DENSE_QUERY_PEAKS, F_MAX_BIN, FRAME_SECONDS, QUERY_PEAKS, peaks
from .hashes import DENSE_QUERY_PAIRING, QUERY_PAIRING, Pairing, landmarks
from .hashtable import HashTable, Hits
from .verify import MIN_OFFSET_GAP_S, SHIFTS, QueryGrid

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
# verified: they would not come near it, and verifying them was half a clean clip's time.
_SURE_VOTE_SHARE = 0.25
_REPEATS = 24  # more offsets of the best track verified: music that repeats fits several
_REPEAT_MIN_Z = 5.0  # ...when the best track could be an answer (fusion accepts fits this weak)
_VOTE_KEYS = 8192  # (track, offset) keys ranked: CANDIDATES buckets of ≤63 keys each fit
_PROPOSAL_SPAN = 36  # frames (±0.58 s) searched around an offset proposed by the embeddings
# A fit below the threshold by up to STANDOUT_DISCOUNT is an answer when it beats every other
# track by STANDOUT_GAP (see `fingerprint_suffices`): unknown music's best and second-best
# tracks fit alike, so a lone near miss is rare by chance (calibrated: docs/calibration.md).
STANDOUT_DISCOUNT = 1.5
STANDOUT_GAP = 3.0
_AMBIGUOUS_RATIO = 0.7  # another offset of the same track this close in score is reported too


class Fit(NamedTuple):
    """One verified (track, offset); ordered by z first, so that max() is the best fit."""

    z: float
    track_id: int
    offset: int  # in frames: stored frame − query frame
    # False: found only by searching around an offset the embeddings proposed, where a fit is
    # found by construction, so it is no second opinion on them (see `fusion.Evidence.agree`).
    voted: bool = True


@dataclass(frozen=True)
class TrackFit:
    """A track's fit to the query, as `best_per_track` sums it up."""

    z: float  # the best z-score of its candidates (what decides)
    offset_s: float  # where its best fit puts the clip
    other_offsets_s: tuple[float, ...] = ()  # other places that fit almost as well
    # The fits the landmarks' votes found (not the search around the embeddings' offsets):
    voted_z: float = 0.0  # the best of their z-scores (0: none)
    voted_offsets_s: tuple[float, ...] = ()  # where they put the clip


def verified_candidates(samples: np.ndarray, table: HashTable,
                        proposals: Callable[[], list[tuple[int, float]]] | None = None
                        ) -> tuple[list[Fit], list[Fit]]:
    """(candidates, placements): the fit of every candidate verified, in no order, and of the
    best track's other places found by scanning it whole (music that repeats).

    The placements say where in that track the clip is, not whether it is there: a track
    scanned whole offers many more chances to fit by chance than the other tracks had, so
    only the candidates' fits decide the answer.

    `proposals()` gives (track, offset in s) pairs found some other way (the embeddings); they
    are verified too (their fits not `voted`), searching ±0.6 s around the offset since their
    offsets are coarse. It is called only when the landmarks alone found nothing beyond doubt
    (SURE_Z)."""
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
            grid, hashes, frames = as_played(*found_peaks[density], speed, pairing)
            first_here = len(verified)
            fits, tried = _verify_votes(grid, stored_peaks, table, vote(table.lookup(hashes), frames))
            verified += fits
            if proposals is not None and max(verified, default=(0.0,))[0] < SURE_Z:
                # The embeddings hear through a speed error: their proposals are tried at
                # every speed, as the landmarks' candidates are.
                if proposed is None:
                    proposed = proposals()
                for track, offset_s in proposed:
                    centre = int(round(offset_s / FRAME_SECONDS))
                    searched = _fits(grid, stored_peaks, table, track, range(
                        centre - _PROPOSAL_SPAN, centre + _PROPOSAL_SPAN + 1, len(SHIFTS)))
                    verified.append(max(searched)._replace(voted=False))
            here = max(verified[first_here:], default=Fit(0.0, -1, 0))
            if here.z > best_z:
                best_z, best_at = here.z, (here.track_id, grid, tried)
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


def as_played(t: np.ndarray, f: np.ndarray, speed: float, pairing: Pairing
               ) -> tuple[QueryGrid, np.ndarray, np.ndarray]:
    """The query's peaks scaled back from `speed` (played at `speed`, a frame t was t*speed and
    a bin f was f/speed in the original): their grid, landmark hashes and anchor frames."""
    st = np.round(t * speed).astype(np.int64)
    sf = np.clip(np.round(f / speed), 0, F_MAX_BIN - 1).astype(np.int64)
    hashes, frames = landmarks(st, sf, pairing)
    return QueryGrid(st, sf), hashes, frames


def _verify_votes(grid: QueryGrid, stored_peaks: dict, table: HashTable,
                  ranked: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[list[Fit], set]:
    """The first CANDIDATES of `vote`'s ranking verified (fewer once one is beyond doubt), and
    the (track, offset) pairs tried."""
    fits, tried, sure_votes = [], set(), 0
    tracks, offsets, votes_of = (a[:CANDIDATES].tolist() for a in ranked)
    for track, offset, votes in zip(tracks, offsets, votes_of):
        if votes < _SURE_VOTE_SHARE * sure_votes:
            break
        tried.add((track, offset))
        fits.append(_fit(grid, stored_peaks, table, track, offset))
        if fits[-1].z >= SURE_Z and not sure_votes:
            sure_votes = votes
    return fits, tried


def _fit(grid: QueryGrid, stored_peaks: dict, table: HashTable, track: int, offset: int) -> Fit:
    """One candidate verified at its best shift."""
    return _fits(grid, stored_peaks, table, track, [offset])[0]


def _fits(grid: QueryGrid, stored_peaks: dict, table: HashTable, track: int,
          offsets: Sequence[int]) -> list[Fit]:
    """A track verified at each of `offsets`, at its best shift; each track's peaks are read
    once per query."""
    if track not in stored_peaks:
        stored_peaks[track] = table.peaks_of(track)
    z, shifts = grid.verify(*stored_peaks[track], np.asarray(offsets))
    return [Fit(float(a), track, int(o - s)) for a, o, s in zip(z, offsets, shifts)]


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
    # would be most of a query's time in a large catalog.
    if pooled.size > _VOTE_KEYS:
        top = np.argpartition(-pooled, _VOTE_KEYS)[:_VOTE_KEYS]
        uniq, pooled = uniq[top], pooled[top]
    order = np.lexsort((uniq, -pooled))  # most votes first; ties by track and offset
    tracks = (uniq[order] >> 32).astype(np.int64)
    offsets = (uniq[order] & 0xFFFFFFFF).astype(np.int64) - (1 << 31)
    buckets = (tracks << 32) | ((offsets // int(MIN_OFFSET_GAP_S / FRAME_SECONDS)) + (1 << 31))
    first = np.sort(np.unique(buckets, return_index=True)[1])
    return tracks[first], offsets[first], pooled[order][first]


def fingerprint_suffices(z: float, runner_up_z: float, threshold: float) -> bool:
    """Is a track's fit an answer by itself? Either its z-score reaches the threshold, or it
    comes close and stands far above every other track's (`runner_up_z`): for audio that is
    not in the catalog, the best and second-best tracks fit about equally badly."""
    return z >= threshold or (z >= threshold - STANDOUT_DISCOUNT and z - runner_up_z >= STANDOUT_GAP)


def runner_ups(best: dict[int, TrackFit]) -> dict[int, float]:
    """{track: the best z-score of any other track} from `best_per_track`'s answer."""
    ranked = sorted(((fit.z, track) for track, fit in best.items()), reverse=True)
    if not ranked:
        return {}
    top_z, top_track = ranked[0]
    second_z = ranked[1][0] if len(ranked) > 1 else 0.0
    return {track: second_z if track == top_track else top_z for track in best}


def best_per_track(verified: Sequence[Fit], placements: Sequence[Fit] = ()) -> dict[int, TrackFit]:
    """Each track's fit: the best z of its candidates, the offset of its best fit, other
    offsets that fit almost as well, and what the fits found by the votes say;
    `placements` only place a track (see `verified_candidates`)."""
    decided: dict[int, float] = {}
    voted: dict[int, list[Fit]] = {}
    for fit in sorted(verified, reverse=True):
        decided.setdefault(fit.track_id, max(float(fit.z), 0.0))
        if fit.voted:
            voted.setdefault(fit.track_id, []).append(fit)
    found: dict[int, list[tuple[float, int]]] = {}
    for z, track, offset, _ in sorted([*verified, *placements], reverse=True):
        found.setdefault(track, []).append((float(z), offset))
    out = {}
    for track, fits in found.items():
        z, offset = fits[0]
        others: list[int] = []
        for z2, o2 in fits[1:]:
            if z > 0 and z2 >= _AMBIGUOUS_RATIO * z and all(
                    abs(o2 - o) * FRAME_SECONDS >= MIN_OFFSET_GAP_S for o in [offset, *others]):
                others.append(o2)
        by_votes = voted.get(track, [])
        out[track] = TrackFit(decided.get(track, 0.0), _seconds(offset),
                              tuple(_seconds(o) for o in sorted(others)),
                              max(float(by_votes[0].z), 0.0) if by_votes else 0.0,
                              tuple(_seconds(f.offset) for f in by_votes))
    return out


def _seconds(frames: int) -> float:
    return round(frames * FRAME_SECONDS, 3)


def confidence(z: float) -> float:
    """Probability that a match with this z-score is right (logistic fit of `ear eval` runs)."""
    return round(float(1.0 / (1.0 + np.exp(-(z - _CONF_MID) * _CONF_SLOPE))), 3)


_CONF_MID, _CONF_SLOPE = 5.5, 1.5
