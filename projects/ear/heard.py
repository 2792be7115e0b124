"""A query as the query log keeps it (querylog.py): what was asked (route, library, seconds of
audio), how long decoding and matching took (`Timing`), and what was answered (`Answered`, the
best match, of an identification or of a hum: `answered`), by the routes and the CLI alike."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .decode import SAMPLE_RATE

if TYPE_CHECKING:  # (not imported: `ear stats` has no need of the model that identify loads)
    from .hum import HumMatch
    from .identify import Candidate


@dataclass(frozen=True)
class Answered:
    """The best match of an answer."""

    track_id: int
    offset_s: float  # where in the track: the clip's start, or the hummed melody's
    score: float
    confidence: float | None  # None: the path has no calibrated confidence (humming)
    evidence: tuple[str, ...]  # which evidence matched alone: "fingerprint", "embedding", "melody"


def answered(best: Candidate | None) -> Answered | None:
    """An identification's best match (identify, similar) as the log keeps it."""
    if best is None:
        return None
    return Answered(best.track.id, best.offset_s, best.score, best.confidence, best.evidence)


def hummed(best: HumMatch | None) -> Answered | None:
    """A hum's best match: where the melody starts, and no calibrated confidence."""
    return None if best is None else Answered(best.track_id, best.start_s, best.score, None, ("melody",))


@dataclass(frozen=True)
class Heard:
    """One query, as the log keeps it."""

    route: str  # "identify", "similar" or "hum"
    library: str  # the library it searched
    clip_s: float
    decode_ms: float
    match_ms: float
    offered: Sequence[int] = ()  # every track the answer named: matches and candidates
    best: Answered | None = None  # None: "no match"
    error: str = ""  # the code of the error it ended in (not_audio, no_melody, ...), if it did

    def row(self) -> dict:
        """The columns of its `db.LoggedQuery` row (but its id and time)."""
        best = asdict(self.best) if self.best else {}
        return {"library": self.library, "route": self.route, "clip_s": round(self.clip_s, 3),
                "decode_ms": round(self.decode_ms, 1), "match_ms": round(self.match_ms, 1),
                **{k: v for k, v in best.items() if k != "evidence"},
                "evidence": ",".join(best.get("evidence", ())),
                "offered": json.dumps(list(dict.fromkeys(int(i) for i in self.offered))), "error": self.error}


class Timing:
    """A query's clock: made as its decoding starts, told when it ends (`decoded`); `heard`
    takes the match's time up to its call."""

    def __init__(self) -> None:
        self.started = self.decoded_at = time.perf_counter()

    def decoded(self) -> None:
        self.decoded_at = time.perf_counter()

    def heard(self, route: str, library: str, samples: np.ndarray, offered: Iterable[int],
              best: Answered | None, error: str = "") -> Heard:
        return Heard(route, library, samples.size / SAMPLE_RATE, (self.decoded_at - self.started) * 1000,
                     (time.perf_counter() - self.decoded_at) * 1000, tuple(offered), best, error)
