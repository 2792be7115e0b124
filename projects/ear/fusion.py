"""Two kinds of evidence, one ranking: fingerprint fits and embedding windows.

The embeddings vote like landmarks do: each 2 s query window's nearest stored windows vote for
(track, stored time − query time); their best (track, offset) pairs are what `identify` hands
the fingerprint verifier as extra candidates. `combine` ranks every track by both scores
together; a track is a match when either kind of evidence alone is beyond what unknown audio
reaches, or both together are, where the landmarks' own votes found the track too.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .match import TrackFit, confidence, fingerprint_suffices, runner_ups

NEIGHBOURS = 10  # stored windows fetched per query window
SEARCH_K = 500  # Annoy nodes looked at per window: recall far above the default (docs/embeddings.md)
PROPOSALS = 8  # embedding candidates handed to fingerprint verification
QUERY_HOP_S = 0.5
_OFFSET_BIN_S = 0.5

# Both rules are set just above what unknown music reaches in `ear eval` (docs/calibration.md).
# The fused score is its own scale, calibrated apart from EAR_MATCH_THRESHOLD, which is the
# fingerprint's alone.
EMBEDDING_SCORE = 0.12  # mean window margin at the best offset: the embeddings alone suffice
# ...over at least this many query windows (2 s every 0.5 s: 5 s of audio, the shortest clips the
# rule was calibrated on). Over fewer, the mean margin is noise: of the matches that 1.5–3 s
# clips got from the embeddings alone, 111 of 201 named the wrong track (docs/seeing.md).
EMBEDDING_ALONE_WINDOWS = 7
# ...and only in a library whose index holds this many windows (~3 h of music): in a smaller one
# a query window's neighbours span unlike music, their farthest is far, and the margins of any
# music are wide. Below it, 1-17 % of unknown 6 s clips were matched by the embeddings alone; at
# it and above, under 1 % (libraries of 1-60 real tracks, docs/calibration.md).
EMBEDDING_ALONE_INDEX_WINDOWS = 10_000
FUSED_SCORE = 7.5  # z + EMBEDDING_WEIGHT × embedding score, where both agree on the offset
EMBEDDING_WEIGHT = 30.0
_OFFSET_TRUST_Z = 4.0  # below it a fingerprint fit's offset is noise
_AGREE_S = 1.0


class Vote(NamedTuple):
    """The embeddings' evidence for one track."""

    score: float  # mean window margin at the best offset
    offset_s: float
    windows: int  # the query's windows the mean is over


@dataclass(frozen=True)
class Evidence:
    """Everything known of one track's fit to a query, and whether it is a match."""

    track_id: int
    offset_s: float
    fingerprint_z: float
    embedding_score: float
    embedding_alone: bool  # may the embeddings suffice alone (enough windows, on both sides)?
    other_offsets_s: tuple[float, ...]
    # Both kinds of evidence put the clip at the same place in the track, each found on its
    # own: the landmarks' votes found the track there too, or found it somewhere with a fit
    # whose offset is not noise (music repeats). A fit found only by searching around the
    # embeddings' offset agrees with it by construction, and that search's many tries make
    # weak fits of unknown music: 7 of 100 unknown 2 s clips at 5 dB SNR were matched so
    # (docs/calibration.md).
    agree: bool
    threshold: float  # EAR_MATCH_THRESHOLD: the z-score at which the fingerprint alone suffices
    runner_up_z: float  # the best fingerprint z-score of any other track

    @property
    def fused(self) -> float:
        return max(self.fingerprint_z, 0.0) + EMBEDDING_WEIGHT * self.embedding_score

    @property
    def kinds(self) -> list[str]:
        found = []
        if fingerprint_suffices(self.fingerprint_z, self.runner_up_z, self.threshold):
            found.append("fingerprint")
        if self.embedding_alone and self.embedding_score >= EMBEDDING_SCORE:
            found.append("embedding")
        return found

    @property
    def is_match(self) -> bool:
        # Together, two weak kinds of evidence count only where they agree on the offset: by
        # chance they rarely do, even in music that sounds alike.
        return bool(self.kinds) or (self.agree and self.fused >= FUSED_SCORE)

    @property
    def confidence(self) -> float:
        return confidence(self.fused)


def embedding_votes(neighbours: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    query_starts: np.ndarray) -> dict[int, Vote]:
    """A vote for every track among the neighbours.

    A window's evidence for (track, offset) is how much nearer that stored window is than the
    window's farthest neighbour: music of the same kind is near everything alike, a true match
    stands out. The score of a track is that margin summed over the query windows at its best
    offset (±0.5 s: the index holds one window a second), divided by the number of windows."""
    if not neighbours:
        return {}
    margins: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    for j, (tracks, starts, sims) in enumerate(neighbours):
        if sims.size == 0:
            continue
        floor = float(sims.min())
        bins = np.round((starts - query_starts[j]) / _OFFSET_BIN_S).astype(np.int64)
        for track, b, sim in zip(tracks.tolist(), bins.tolist(), sims.tolist()):
            for pooled in (b - 1, b, b + 1):
                window = margins[(track, pooled)]
                window[j] = max(window.get(j, 0.0), sim - floor)
    per_track: dict[int, tuple[float, float]] = {}
    for (track, b), window in margins.items():
        score = sum(window.values())
        if score > per_track.get(track, (-1.0, 0.0))[0]:
            per_track[track] = (score, b * _OFFSET_BIN_S)
    n = len(neighbours)
    return {t: Vote(score / n, offset, n) for t, (score, offset) in per_track.items()}


def ranked(votes: dict[int, Vote]) -> list[tuple[int, Vote]]:
    """(track, vote), best score first."""
    return sorted(votes.items(), key=lambda kv: -kv[1].score)


def proposals(votes: dict[int, Vote]) -> list[tuple[int, float]]:
    """(track, offset in s) of the best votes, for the fingerprint verifier."""
    return [(track, vote.offset_s) for track, vote in ranked(votes)[:PROPOSALS]]


def combine(fingerprint: dict[int, TrackFit], votes: dict[int, Vote],
            threshold: float, index_windows: int = EMBEDDING_ALONE_INDEX_WINDOWS) -> list[Evidence]:
    """Every track with any evidence, best fused score first.

    The offset is the fingerprint's when it has one (it is exact to a frame). `threshold` is
    the z-score at which the fingerprint alone is an answer; `index_windows`, the windows of
    the library's embedding index (see EMBEDDING_ALONE_INDEX_WINDOWS)."""
    out = []
    others = runner_ups(fingerprint)
    no_fit, no_vote = TrackFit(0.0, 0.0), Vote(0.0, 0.0, 0)
    for track in set(fingerprint) | set(votes):
        fit = fingerprint.get(track, no_fit)
        z, offset, repeats = fit.z, fit.offset_s, fit.other_offsets_s
        vote = votes.get(track, no_vote)
        score, ml_offset = vote.score, vote.offset_s
        near = track in fingerprint and track in votes and abs(offset - ml_offset) <= _AGREE_S
        agree = near and (fit.voted_z >= _OFFSET_TRUST_Z
                          or any(abs(o - ml_offset) <= _AGREE_S for o in fit.voted_offsets_s))
        if z < _OFFSET_TRUST_Z and score > 0 and not near:  # a weak fit's offset is noise
            offset, repeats = ml_offset, ()
        alone = vote.windows >= EMBEDDING_ALONE_WINDOWS and index_windows >= EMBEDDING_ALONE_INDEX_WINDOWS
        out.append(Evidence(track, round(offset, 3), round(z, 2), round(score, 3), alone, repeats,
                            agree, threshold, others.get(track, 0.0)))
    out.sort(key=lambda e: -e.fused)
    return out
