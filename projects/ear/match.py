"""Query landmarks + hash table → ranked (track, offset) candidates, or none.

Each hit votes for (track, stored frame − query frame). A true match piles its votes on one
offset; chance hits spread out. Votes within ±SMEAR frames are pooled so that small timing
jitter (and the drift of a slightly wrong playback speed) still adds up.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import FRAME_SECONDS, QUERY_PEAKS, peaks
from .hashes import QUERY_PAIRING, landmarks
from .hashtable import HashTable

SMEAR = 2
_OFFSET_BIAS = 1 << 31
# Tried in turn while nothing is confidently matched: a recording played ±1 % off speed
# shifts every peak in time and frequency, so its landmarks are rebuilt as if undone.
SPEED_FACTORS = (1.0, 0.99, 1.01)
_AMBIGUOUS_RATIO = 0.8  # a second offset of the same track this close in score is reported too
_MIN_OFFSET_GAP_S = 1.0


@dataclass(frozen=True)
class Candidate:
    track_id: int
    offset_s: float
    score: int
    confidence: float


def identify(samples: np.ndarray, table: HashTable, *, min_score: int, top_k: int) -> list[Candidate]:
    """Best (track, offset) candidates for a query clip; empty when nothing is really there."""
    t, f = peaks(samples, QUERY_PEAKS)
    best: list[Candidate] = []
    for speed in SPEED_FACTORS:
        if speed == 1.0:
            st, sf = t, f
        else:
            # Played at `speed`, a frame t was t*speed and a bin f was f/speed in the original.
            st = np.round(t * speed).astype(np.int32)
            sf = np.round(f / speed).astype(np.int32)
        hashes, frames = landmarks(st, sf, QUERY_PAIRING)
        found = rank(table.lookup(hashes), frames, min_score=min_score, top_k=top_k)
        if found and (not best or found[0].score > best[0].score):
            best = found
        if best and best[0].confidence >= 0.5:
            break
    return best


def rank(hits, query_frames: np.ndarray, *, min_score: int, top_k: int) -> list[Candidate]:
    """Vote on offsets; return up to top_k candidates scoring at least min_score."""
    if hits.track_id.size == 0:
        return []
    offsets = hits.frame - query_frames[hits.query_index].astype(np.int64)
    keys = (hits.track_id << 32) | (offsets + _OFFSET_BIAS)
    uniq, counts = np.unique(keys, return_counts=True)
    csum = np.concatenate([[0], np.cumsum(counts)])
    left = np.searchsorted(uniq, uniq - SMEAR, side="left")
    right = np.searchsorted(uniq, uniq + SMEAR, side="right")
    pooled = csum[right] - csum[left]

    order = np.argsort(-pooled, kind="stable")
    # Chance level for this query: the best score of a track that is not the winner.
    per_track_best: dict[int, int] = {}
    picks: list[tuple[int, int, int]] = []  # (track, pooled score, index into uniq)
    for idx in order[: 50 * (top_k + 1)]:
        track = int(uniq[idx] >> 32)
        score = int(pooled[idx])
        if track not in per_track_best:
            per_track_best[track] = score
            picks.append((track, score, int(idx)))
        elif score >= _AMBIGUOUS_RATIO * per_track_best[track] and _far_from(picks, track, idx, uniq):
            picks.append((track, score, int(idx)))
    scores = sorted(per_track_best.values(), reverse=True)
    chance = scores[1] if len(scores) > 1 else 0
    out = []
    for track, score, idx in picks:
        if score < min_score:
            continue
        rival = chance if score == scores[0] else scores[0]
        lo, hi = left[idx], right[idx]
        frame = np.average((uniq[lo:hi] & 0xFFFFFFFF).astype(np.float64) - _OFFSET_BIAS,
                           weights=counts[lo:hi])
        out.append(Candidate(track, round(float(frame) * FRAME_SECONDS, 3), score,
                             confidence(score, rival, min_score)))
    out.sort(key=lambda c: -c.score)
    return out[:top_k]


def _far_from(picks, track: int, idx: int, uniq: np.ndarray) -> bool:
    offset = int(uniq[idx] & 0xFFFFFFFF)
    return all(abs(offset - int(uniq[i] & 0xFFFFFFFF)) * FRAME_SECONDS >= _MIN_OFFSET_GAP_S
               for t, _, i in picks if t == track)


def confidence(score: int, rival: int, min_score: int) -> float:
    """How likely this answer is right, from its score and the best competing score."""
    margin = score - max(rival, min_score / 2)
    return round(float(1.0 - np.exp(-max(margin, 0) / 6.0)), 3)
