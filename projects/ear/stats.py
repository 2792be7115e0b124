"""How ear is doing, from the query log and the listeners' feedback: `figures(days, library)`
over the last `days` (one library's, or every library's), as `ear stats` prints them.

Per route: queries, the share answered (a match, not "no match"), latency (decode + match)
p50/p95, median clip length. Per day: queries and answered. For answers with a confidence
(identify, similar): a histogram in tenths. The tracks answered most. Feedback: verdicts on
answers that named a track, precision (right / judged), and the corrections people typed.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from .db import Feedback, LoggedQuery, Track, database, now

CONFIDENCE_BINS = 10  # tenths: fine enough to see where answers sit, each bin still well filled
TOP_TRACKS = 10
CORRECTIONS = 20  # the latest "it was …" typed by listeners


@dataclass(frozen=True)
class RouteFigures:
    route: str
    queries: int
    answered: int
    p50_ms: float
    p95_ms: float
    median_clip_s: float

    @property
    def answered_share(self) -> float:
        return self.answered / self.queries if self.queries else 0.0


@dataclass(frozen=True)
class Figures:
    days: int
    library: str | None  # None: every library
    routes: list[RouteFigures]
    per_day: list[tuple[str, int, int]]  # (ISO date, queries, answered), oldest first
    confidence_histogram: list[int]  # answers with a confidence, by tenth
    top_tracks: list[tuple[int, str, int]]  # (track id, title or "(removed)", answers)
    right: int  # verdicts on answers that named a track
    wrong: int
    missed: int  # "wrong" on a "no match": the listener knew it
    corrections: list[str]

    @property
    def precision(self) -> float | None:
        judged = self.right + self.wrong
        return self.right / judged if judged else None

    def to_json(self) -> dict:
        data = asdict(self)
        data["routes"] = [{**asdict(r), "answered_share": round(r.answered_share, 4)} for r in self.routes]
        data["precision"] = None if self.precision is None else round(self.precision, 4)
        return data


def figures(days: int, library: str | None = None) -> Figures:
    """The figures of the last `days` days (see the module's docstring)."""
    since = now() - dt.timedelta(days=days)
    with database.connection_context():
        query = LoggedQuery.select(LoggedQuery.created_at, LoggedQuery.route, LoggedQuery.track_id,
                                   LoggedQuery.confidence, LoggedQuery.decode_ms, LoggedQuery.match_ms,
                                   LoggedQuery.clip_s).where(LoggedQuery.created_at >= since)
        verdicts = Feedback.select(Feedback.verdict, Feedback.track_id, Feedback.actual).where(
            Feedback.created_at >= since)
        if library is not None:
            query = query.where(LoggedQuery.library == library)
            verdicts = verdicts.where(Feedback.library == library)
        rows = list(query.order_by(LoggedQuery.created_at).tuples())
        feedback = list(verdicts.order_by(Feedback.id).tuples())
        answers = Counter(track for _, _, track, *_ in rows if track is not None)
        top = answers.most_common(TOP_TRACKS)
        titles = {t.id: t.title for t in Track.select(Track.id, Track.title).where(
            Track.id.in_([track for track, _ in top]))}
    confidences = np.array([c for _, _, _, c, *_ in rows if c is not None], dtype=float)
    histogram = np.histogram(confidences, bins=CONFIDENCE_BINS, range=(0, 1))[0]
    return Figures(
        days, library, _by_route(rows), _by_day(rows), histogram.tolist(),
        [(track, titles.get(track, "(removed)"), n) for track, n in top],
        right=sum(v == "right" and t is not None for v, t, _ in feedback),
        wrong=sum(v == "wrong" and t is not None for v, t, _ in feedback),
        missed=sum(v == "wrong" and t is None for v, t, _ in feedback),
        corrections=[actual for _, _, actual in feedback if actual][-CORRECTIONS:])


def _by_route(rows: list[tuple]) -> list[RouteFigures]:
    found = []
    for route in sorted({row[1] for row in rows}):
        mine = [row for row in rows if row[1] == route]
        latency = np.array([decode + match for *_, decode, match, _ in mine])
        found.append(RouteFigures(
            route, len(mine), sum(row[2] is not None for row in mine),
            round(float(np.percentile(latency, 50)), 1), round(float(np.percentile(latency, 95)), 1),
            round(float(np.median([row[-1] for row in mine])), 2)))
    return found


def _by_day(rows: list[tuple]) -> list[tuple[str, int, int]]:
    queries: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    for created_at, _, track, *_ in rows:
        day = created_at.date().isoformat()
        queries[day] += 1
        answered[day] += track is not None
    return [(day, queries[day], answered[day]) for day in sorted(queries)]
