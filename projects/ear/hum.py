"""A hum → the tracks of a library that carry its melody, and where in them.

1. The hum's pitch contour (pitch.py), smoothed and cut into notes (melody.py). With less than
   MIN_VOICED_S of pitched sound or fewer than MIN_NOTES notes there is no melody to look for:
   `no_melody` (422).
2. Votes: each gram of the hum, and its variants with one interval a semitone off (a wrong
   note), is looked up among the library's grams (melody_index.py). A hit votes for (track,
   transposition: the track's pitch − the hum's, modulo 12): the notes of the hummed melody
   agree on its key. The best-voted cells name up to CANDIDATES tracks. (Cells by place in the
   track too, as a diagonal of note numbers, found the right track less often: missing and
   extra notes move a hum's hits off one diagonal; docs/hum.md.)
3. Alignment: the hum's contour is aligned with each candidate's contour around its cell by
   subsequence DTW with steps (1,1), (1,2), (2,1) (the hum at 0.5–2× the track's tempo),
   transposed by the cell's shift. The cost of a frame is its pitch distance folded into one
   octave (a track's melody line may jump octaves where another instrument takes over) and
   capped at COST_CAP (a wrong note costs what a missing one does). Similarity = 1 − mean
   cost / COST_CAP.
4. The answer: a track is a match when its similarity reaches MATCH_SIMILARITY and leads the
   chance level by MATCH_LEAD. Chance is the median similarity of the other candidates: tracks
   that merely share a few steps with the hum, which a longer or cleaner hum scores higher
   against too. Two beats with the same hook both lead it. The floor speaks for a library too
   small for its other candidates to say what chance is.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .db import Track
from .errors import BadAudio
from .melody import GRAM, INTERVALS, Notes, grams, notes, smooth
from .melody_index import Generation, MelodyIndex
from .pitch import FRAME_SECONDS, contour

MIN_VOICED_S = 2.0  # less pitched sound than that is a cough or a word, not a melody
MIN_NOTES = GRAM + 3  # enough notes for a few grams
_VARIANT_VOTE = 0.5  # a hit of a gram with one interval changed counts half
CANDIDATES = 40  # tracks aligned exactly: the right one is more often among 40 than 20 cells
DECIMATE = 2  # contours aligned at every other frame (96 ms): notes last longer
COST_CAP = 2.0  # semitones
UNVOICED_COST = 1.0  # a track frame with no melody: a rest, or the lead lost under the mix
MARGIN_FRAMES = 20  # around the region a cell implies, for the alignment to settle
# Chosen on 50 beats of `ear eval --hum` (seed 0, 20 candidates then): right answers led by
# ≥ 0.15 at the easy and moderate levels, with similarities ≥ 0.72; hums of melodies not in the
# catalog led by ≤ 0.15, at 0.62–0.76. Held out (500 beats, 40 candidates): 4 % of unknown
# melodies answered (docs/hum.md).
MATCH_SIMILARITY = 0.72
MATCH_LEAD = 0.15
CHANCE_SIMILARITY = 0.6  # the median of that median, for a library with too few candidates
_CHANCE_FROM = 5  # candidates the median is taken over, padded with CHANCE_SIMILARITY


@dataclass(frozen=True)
class HumMatch:
    track_id: int
    score: float  # similarity, 0..1
    start_s: float  # the matched span in the track
    end_s: float
    is_match: bool = False  # judged by `search` against the other candidates
    shift: float = 0.0  # semitones from the hum up to the track's melody, modulo octaves

    def to_json(self, track: Track, path: bool = True) -> dict:
        """`path`: as `Track.to_json`."""
        return {"track": track.to_json(brief=True, path=path), "score": self.score,
                "start_s": min(self.start_s, track.duration), "end_s": min(self.end_s, track.duration)}


@dataclass(frozen=True)
class _Hum:
    contour: np.ndarray  # every DECIMATE-th voiced frame, smoothed
    notes: Notes


def read_hum(samples: np.ndarray) -> _Hum:
    smoothed = smooth(contour([samples]))
    voiced = np.flatnonzero(~np.isnan(smoothed))
    found = notes(smoothed)
    if voiced.size * FRAME_SECONDS < MIN_VOICED_S or len(found) < MIN_NOTES:
        raise BadAudio("no_melody", f"No melody heard: {voiced.size * FRAME_SECONDS:.1f} s of pitched "
                       f"sound in {len(found)} notes (at least {MIN_VOICED_S:g} s and {MIN_NOTES} "
                       "notes needed). Hum or sing the tune, a few seconds of it.", 422)
    return _Hum(smoothed[voiced[::DECIMATE]], found)


def search(index: MelodyIndex, samples: np.ndarray, k: int = 5) -> list[HumMatch]:
    """The `k` best-aligned tracks of the library, matches (`is_match`) first. Raises
    BadAudio('no_melody') when the recording holds no melody."""
    hum = read_hum(samples)
    generation = index.refresh()
    found = sorted(_align(generation, hum, _cells(generation, hum.notes)), key=lambda m: -m.score)
    scores = np.array([m.score for m in found])
    judged = []
    for i, m in enumerate(found[:k]):
        others = np.delete(scores, i)
        padding = np.full(max(0, _CHANCE_FROM - others.size), CHANCE_SIMILARITY)
        chance = float(np.median(np.concatenate([others, padding])))
        judged.append(replace(m, is_match=m.score >= MATCH_SIMILARITY and m.score - chance >= MATCH_LEAD))
    return judged


def _variants(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each key, and each with one of its intervals a semitone wider or narrower: (keys,
    position of the gram they come from, vote weight)."""
    out, where, weight = [keys], [np.arange(keys.size)], [np.ones(keys.size)]
    digits = [(keys // INTERVALS ** p) % INTERVALS for p in range(GRAM)]
    for p, digit in enumerate(digits):
        for step in (-1, 1):  # folded as the intervals are: a semitone past +6 is −5
            out.append(keys + ((digit + step) % INTERVALS - digit) * INTERVALS ** p)
            where.append(np.arange(keys.size))
            weight.append(np.full(keys.size, _VARIANT_VOTE))
    return np.concatenate(out), np.concatenate(where), np.concatenate(weight)


def _cells(generation: Generation, hum: Notes) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The best cell of each of the best-voted tracks: (track position, the hum's notes and the
    track's notes of its hits)."""
    keys, gram_at, weight = _variants(grams(hum))
    which, at = generation.lookup(keys)
    if at.size == 0:
        return []
    hum_note = gram_at[which]
    track, track_note = generation.track[at].astype(np.int64), generation.note[at].astype(np.int64)
    shift = (generation.pitch[at].astype(np.int64) - hum.pitch[hum_note]) % 12
    cell = track * 12 + shift
    # A hum gram counts once per cell, with the weight of its best variant.
    order = np.lexsort((-weight[which], hum_note, cell))
    first = np.concatenate([[True], (np.diff(cell[order]) != 0) | (np.diff(hum_note[order]) != 0)])
    chosen = order[first]
    unique, inverse = np.unique(cell[chosen], return_inverse=True)
    votes = np.bincount(inverse, weights=weight[which][chosen])
    best: dict[int, int] = {}  # track position → its best cell
    for c in unique[np.argsort(-votes, kind="stable")]:
        best.setdefault(int(c // 12), int(c))
        if len(best) == CANDIDATES:
            break
    return [(t, hum_note[cell == c], track_note[cell == c]) for t, c in best.items()]


def _align(generation: Generation, hum: _Hum, cells: list[tuple[int, np.ndarray, np.ndarray]]) -> list[HumMatch]:
    """Subsequence DTW of the hum against each cell's region, all cells at once."""
    if not cells:
        return []
    regions, starts, shifts = [], [], []
    last_frame = int(hum.notes.end[-1])
    for t, hum_notes, track_notes in cells:
        melody = generation.tracks[t]
        h_on, t_on = hum.notes.onset[hum_notes], melody.notes.onset[track_notes]
        lo = int(t_on.min() - 2 * h_on.min()) - MARGIN_FRAMES
        hi = int(t_on.max() + 2 * (last_frame - h_on.max())) + MARGIN_FRAMES
        lo, hi = max(lo, 0), min(hi, melody.contour.size)
        lo -= lo % DECIMATE
        regions.append(melody.contour[lo:hi:DECIMATE].astype(np.float32))
        starts.append(lo)
        shifts.append(float(np.median(melody.notes.pitch[track_notes].astype(np.float32)
                                      - hum.notes.pitch[hum_notes])))
    width = max(r.size for r in regions)
    region = np.full((len(regions), width), np.inf, np.float32)
    for i, r in enumerate(regions):
        region[i, :r.size] = r
    cost, begin, end = _dtw(hum.contour, region, np.asarray(shifts, np.float32))
    out = []
    for i, (t, _, _) in enumerate(cells):
        similarity = float(1 - cost[i] / COST_CAP)
        out.append(HumMatch(generation.tracks[t].track_id, round(similarity, 4),
                            round(float(starts[i] + begin[i] * DECIMATE) * FRAME_SECONDS, 2),
                            round(float(starts[i] + (end[i] + 1) * DECIMATE) * FRAME_SECONDS, 2),
                            shift=shifts[i]))
    return out


def _costs(query: np.ndarray, region: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(hum frames × regions × region frames) cost of each hum frame against each region frame:
    region frames are pitches, NaN (unvoiced) or inf (past the region's end)."""
    d = query[:, None, None] + shift[None, :, None] - np.where(np.isfinite(region), region, 0)[None]
    cost = np.minimum(np.abs(d - 12 * np.round(d / 12)), COST_CAP).astype(np.float32)
    cost[:, np.isnan(region)] = UNVOICED_COST
    cost[:, np.isinf(region)] = np.inf
    return cost


def _dtw(query: np.ndarray, region: np.ndarray, shift: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per region row: (mean cost per query frame of the best path, its first and last
    region frame). D and the paths' starts are kept with two columns of padding in front, so
    that the steps' predecessors are slices."""
    cost = _costs(query, region, shift)
    n_cand, width = region.shape
    padded = (n_cand, width + 2)
    before = np.full(padded, np.inf, np.float32)  # D[i − 2]
    previous = np.full(padded, np.inf, np.float32)  # D[i − 1]
    previous[:, 2:] = cost[0]  # a path may start anywhere
    start_before = np.zeros(padded, np.int64)
    start_prev = np.zeros(padded, np.int64)
    start_prev[:, 2:] = np.arange(width)
    for i in range(1, query.size):
        diag, long = previous[:, 1:-1], previous[:, :-2]
        tall = before[:, 1:-1] + cost[i - 1]
        shorter = np.minimum(diag, long)
        here = np.full(padded, np.inf, np.float32)
        here[:, 2:] = np.minimum(shorter, tall) + cost[i]
        start = np.zeros(padded, np.int64)
        start[:, 2:] = np.where(tall < shorter, start_before[:, 1:-1],
                                np.where(diag <= long, start_prev[:, 1:-1], start_prev[:, :-2]))
        before, previous = previous, here
        start_before, start_prev = start_prev, start
    end = np.argmin(previous[:, 2:], axis=1)
    rows = np.arange(n_cand)
    total = previous[rows, end + 2]
    return np.where(np.isfinite(total), total / query.size, COST_CAP), start_prev[rows, end + 2], end
