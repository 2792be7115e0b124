"""How ear is doing, from the query log and the listeners' feedback: `figures(days, library)`
over the last `days` (one library's, or every library's), as `ear stats` prints them.

Per route: queries, the share answered (a match, not "no match"), latency (decode + match)
p50/p95, mean clip length. Per day: queries and answered. For answers with a confidence
(identify, similar): a histogram in tenths. The tracks answered most; the latest no-matches.
Feedback: verdicts on answers that named a track, precision (right / judged), per day, and
against the answer's confidence (reliability: is a 0.9 right 9 times in 10?); the corrections
people typed.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from peewee import JOIN, SQL, Case, Cast, fn

from .db import Feedback, LoggedQuery, Track, database, now

CONFIDENCE_BINS = 10  # tenths: fine enough to see where answers sit, each bin still well filled
TOP_TRACKS = 10  # what a glance takes in; the rest are in the log
CORRECTIONS = 20  # the latest "it was …" typed by listeners
NO_MATCHES = 20  # the latest queries answered "no match"
# Queries whose latency the percentiles are taken over, per route: the newest, recent enough to
# say how ear is doing now, and bounded, so that a full log does not slow the page.
LATENCY_ROWS = 5000


@dataclass(frozen=True)
class RouteFigures:
    route: str
    queries: int
    answered: int
    errors: int  # ended in an error (unreadable audio, no melody): no answer
    p50_ms: float
    p95_ms: float
    mean_clip_s: float

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
    feedback_per_day: list[tuple[str, int, int]]  # (ISO date, right, wrong)
    reliability: list[tuple[int, int]]  # per tenth of confidence: (judged, right)
    no_matches: list[dict]  # the latest, newest first: query_id, created_at, route, clip_s, audio, error

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
    """The figures of the last `days` days (see the module's docstring). Counted in SQL, so
    that a page costs the same for a quiet log and a full one; latency from the newest
    LATENCY_ROWS queries of each route."""
    since = now() - dt.timedelta(days=days)
    mine = LoggedQuery.created_at >= since
    if library is not None:
        mine &= LoggedQuery.library == library
    with database.connection_context():
        cells = _cells(mine)  # one pass over the log: (route, day) → counts
        routes = [_route(route, mine, [c for c in cells if c[0] == route]) for route in sorted({c[0] for c in cells})]
        per_day = [(day, sum(c[2] for c in cells if c[1] == day), sum(c[3] for c in cells if c[1] == day))
                   for day in sorted({c[1] for c in cells})]
        histogram = [sum(c[6 + k] for c in cells) for k in range(CONFIDENCE_BINS)]
        top = list(LoggedQuery.select(LoggedQuery.track_id, fn.COUNT(SQL("*"))).where(
            mine & LoggedQuery.track_id.is_null(False)).group_by(LoggedQuery.track_id).order_by(
            fn.COUNT(SQL("*")).desc(), LoggedQuery.track_id).limit(TOP_TRACKS).tuples())
        titles = {t.id: t.title for t in Track.select(Track.id, Track.title).where(
            Track.id.in_([track for track, _ in top]))}
        no_matches = list(LoggedQuery.select(LoggedQuery.query_id, LoggedQuery.created_at, LoggedQuery.route,
                                             LoggedQuery.clip_s, LoggedQuery.audio, LoggedQuery.error).where(
            mine & LoggedQuery.track_id.is_null()).order_by(LoggedQuery.created_at.desc()).limit(NO_MATCHES).dicts())
        feedback = _feedback(since, library)
    return Figures(
        days, library, routes, per_day, list(histogram),
        [(track, titles.get(track, "(removed)"), n) for track, n in top],
        right=sum(v == "right" and t is not None for v, t, *_ in feedback),
        wrong=sum(v == "wrong" and t is not None for v, t, *_ in feedback),
        missed=sum(v == "wrong" and t is None for v, t, *_ in feedback),
        corrections=[actual for _, _, actual, *_ in feedback if actual][-CORRECTIONS:],
        feedback_per_day=_feedback_by_day(feedback), reliability=_reliability(feedback),
        no_matches=[{**row, "created_at": row["created_at"].isoformat() + "Z"} for row in no_matches])


def _cells(mine) -> list[tuple]:
    """(route, ISO day, queries, answered, seconds of audio, errors, answers in each tenth of
    confidence ...) per route and day: every count of the page from one pass over the log."""
    confidence, day = LoggedQuery.confidence, fn.date(LoggedQuery.created_at)

    def edge(k: int):  # in the column's own type: PostgreSQL keeps a FloatField as `real`, and
        return Cast(k / CONFIDENCE_BINS, "real")  # 0.7 stored there is below the double 0.7

    tenths = (fn.COUNT(Case(None, [((confidence >= edge(k)) & (  # the last takes 1.0 in
        (confidence < edge(k + 1)) if k < CONFIDENCE_BINS - 1 else (confidence <= 1)), 1)]))
        for k in range(CONFIDENCE_BINS))
    return [(route, str(d)[:10], *counts) for route, d, *counts in LoggedQuery.select(
        LoggedQuery.route, day, fn.COUNT(SQL("*")), fn.COUNT(LoggedQuery.track_id), fn.SUM(LoggedQuery.clip_s),
        fn.COUNT(Case(None, [(LoggedQuery.error != "", 1)])), *tenths).where(mine).group_by(
        LoggedQuery.route, day).tuples()]


def _route(route: str, mine, cells: list[tuple]) -> RouteFigures:
    queries = sum(c[2] for c in cells)
    latency = np.array([ms for (ms,) in LoggedQuery.select(LoggedQuery.decode_ms + LoggedQuery.match_ms).where(
        mine & (LoggedQuery.route == route)).order_by(LoggedQuery.created_at.desc()).limit(LATENCY_ROWS).tuples()])
    return RouteFigures(route, queries, sum(c[3] for c in cells), sum(c[5] for c in cells),
                        round(float(np.percentile(latency, 50)), 1),
                        round(float(np.percentile(latency, 95)), 1), round(sum(c[4] for c in cells) / queries, 2))


def _feedback(since: dt.datetime, library: str | None) -> list[tuple]:
    """(verdict, track id, "it was …", when, the answer's confidence if it was about the
    answer's best match) of each verdict, oldest first."""
    verdicts = Feedback.select(Feedback.verdict, Feedback.track_id, Feedback.actual,
                               Feedback.created_at, LoggedQuery.confidence).join(
        LoggedQuery, JOIN.LEFT_OUTER, on=(Feedback.query_id == LoggedQuery.query_id) & (
            Feedback.track_id == LoggedQuery.track_id)).where(Feedback.created_at >= since)
    if library is not None:
        verdicts = verdicts.where(Feedback.library == library)
    return list(verdicts.order_by(Feedback.id).tuples())


def _feedback_by_day(feedback: list[tuple]) -> list[tuple[str, int, int]]:
    right: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    for verdict, track, _, created_at, _ in feedback:
        if track is not None:
            (right if verdict == "right" else wrong)[created_at.date().isoformat()] += 1
    return [(day, right[day], wrong[day]) for day in sorted(set(right) | set(wrong))]


def _reliability(feedback: list[tuple]) -> list[tuple[int, int]]:
    """Per tenth of the answer's confidence: the verdicts on it, and how many said right (only
    verdicts on the answer's own best match, whose confidence the log has)."""
    judged = [0] * CONFIDENCE_BINS
    right = [0] * CONFIDENCE_BINS
    for verdict, _, _, _, confidence in feedback:
        if confidence is not None:
            tenth = min(int(confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)
            judged[tenth] += 1
            right[tenth] += verdict == "right"
    return list(zip(judged, right))
