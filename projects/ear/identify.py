"""A query's answer: which of a library's tracks the clip is, where in them, and how sure ear is.

The fingerprint chain goes first (`match.verified_candidates`). Only when it finds nothing
beyond doubt are the clip's windows embedded, their nearest stored windows vote for (track,
offset) (`fusion.embedding_votes`), and their best proposals are verified by the fingerprint
verifier too. `fusion.combine` then ranks every track with any evidence; the ones whose evidence
suffices (`Evidence.is_match`) are the matches, the rest of the ranking are candidates ("could
it be …?"). Tracks SQLite does not know (a crash mid-write) are never answered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fusion
from .libraries import Library
from .db import Track
from .match import best_per_track, verified_candidates


@dataclass(frozen=True)
class Candidate:
    """A track of the ranking: where in it the clip is, and how sure ear is; a match, or a
    candidate below what ear answers ("could it be …?")."""

    track: Track
    offset_s: float
    score: float
    confidence: float
    other_offsets_s: tuple[float, ...] = ()  # the clip fits equally well there: repeated music
    evidence: tuple[str, ...] = ()  # "fingerprint", "embedding": which of them matched alone
    is_match: bool = True

    def to_json(self, path: bool = True) -> dict:
        """`path`: as `Track.to_json`."""
        data = {"track": self.track.to_json(brief=True, path=path), "offset_s": self.offset_s,
                "score": self.score, "confidence": self.confidence, "evidence": list(self.evidence)}
        if not self.is_match:
            data["confirmed"] = False
        if self.other_offsets_s:
            data["other_offsets_s"] = list(self.other_offsets_s)
        return data


@dataclass(frozen=True)
class Answer:
    matches: list[Candidate]  # best first; empty: the clip is nothing in the library
    candidates: list[Candidate]  # the first tracks of the whole ranking, matches first


@dataclass(frozen=True)
class Identification:
    """The evidence behind an answer."""

    candidates: list[fusion.Evidence]  # every known track with any evidence, best first
    clip_style: np.ndarray | None  # the clip's style vector, when it was embedded

    @property
    def matches(self) -> list[fusion.Evidence]:
        return [e for e in self.candidates if e.is_match]


def identify(library: Library, samples: np.ndarray, candidates: int = 0) -> Answer:
    """The matches (at most EAR_TOP_K) and the first `candidates` tracks of the ranking."""
    found = identification(library, samples)
    return Answer(as_candidates(library, found.matches[: library.config.top_k]),
                  as_candidates(library, found.candidates[:candidates]))


def identification(library: Library, samples: np.ndarray) -> Identification:
    """The evidence for every track the clip could be, ranked (see the module's docstring)."""
    votes: dict[int, fusion.Vote] = {}
    clip_style: list[np.ndarray] = []

    def embedding_proposals() -> list[tuple[int, float]]:
        # Asked for only when the landmarks found nothing beyond doubt: it costs ~30 ms.
        found, style = embed_query(library, samples)
        votes.update(found)
        if style is not None:
            clip_style.append(style)
        return fusion.proposals(votes)

    fits = best_per_track(*verified_candidates(samples, library.table, embedding_proposals))
    known = library.known_ids(set(fits) | set(votes))
    return Identification(
        [e for e in fusion.combine(fits, votes, library.config.match_threshold, library.index.window_count)
         if e.track_id in known],
        clip_style[0] if clip_style else None)


def embed_query(library: Library, samples: np.ndarray) -> tuple[dict[int, fusion.Vote], np.ndarray | None]:
    """(the embeddings' vote for each track near the clip's windows, the clip's style vector);
    none of either if the library's index changed model while the clip was embedded."""
    model = library.model()
    vectors, starts, style = model.analyse(samples, hop_s=fusion.QUERY_HOP_S)
    found = library.index.search_windows(vectors, fusion.NEIGHBOURS, fusion.SEARCH_K)
    if library.model_name() != model.name:  # the vectors searched may be the other model's
        return {}, None
    return fusion.embedding_votes(found, starts), style


def as_candidates(library: Library, found: list[fusion.Evidence]) -> list[Candidate]:
    """The evidence as the tracks it is about (those SQLite knows), in the same order."""
    rows = library.rows(e.track_id for e in found)
    return [Candidate(rows[e.track_id], e.offset_s, round(e.fused, 2), e.confidence,
                  e.other_offsets_s, tuple(e.kinds), e.is_match)
            for e in found if e.track_id in rows]
