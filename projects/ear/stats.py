"""How ear is doing, from the query log and the listeners' feedback: `figures(days, library)`
over the last `days` (one library's, or every library's), as `ear stats` prints them.

Per route: queries, the share answered (a match, not "no match"), latency (decode + match)
p50/p95, median clip length. Per day: queries and answered. For answers with a confidence
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
from peewee import JOIN

from .db import Feedback, LoggedQuery, Track, database, now

CONFIDENCE_BINS = 10  # tenths: fine enough to see where answers sit, each bin still well filled
TOP_TRACKS = 10  # what a glance takes in; the rest are in the log
CORRECTIONS = 20  # the latest "it was …" typed by listeners
NO_MATCHES = 20  # the latest queries answered "no match"


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
    feedback_per_day: list[tuple[str, int, int]]  # (ISO date, right, wrong)
    reliability: list[tuple[int, int]]  # per tenth of confidence: (judged, right)
    no_matches: list[dict]  # the latest, newest first: query_id, created_at, route, clip_s, audio

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
        verdicts = Feedback.select(Feedback.verdict, Feedback.track_id, Feedback.actual,
                                   Feedback.created_at, LoggedQuery.confidence).join(
            LoggedQuery, JOIN.LEFT_OUTER, on=(Feedback.query_id == LoggedQuery.query_id) & (
                Feedback.track_id == LoggedQuery.track_id)).where(Feedback.created_at >= since)
        missing = LoggedQuery.select(LoggedQuery.query_id, LoggedQuery.created_at, LoggedQuery.route,
                                     LoggedQuery.clip_s, LoggedQuery.audio).where(
            (LoggedQuery.created_at >= since) & LoggedQuery.track_id.is_null())
        if library is not None:
            query = query.where(LoggedQuery.library == library)
            verdicts = verdicts.where(Feedback.library == library)
            missing = missing.where(LoggedQuery.library == library)
        rows = list(query.order_by(LoggedQuery.created_at).tuples())
        feedback = list(verdicts.order_by(Feedback.id).tuples())
        no_matches = list(missing.order_by(LoggedQuery.created_at.desc()).limit(NO_MATCHES).dicts())
        answers = Counter(track for _, _, track, *_ in rows if track is not None)
        top = answers.most_common(TOP_TRACKS)
        titles = {t.id: t.title for t in Track.select(Track.id, Track.title).where(
            Track.id.in_([track for track, _ in top]))}
    confidences = np.array([c for _, _, _, c, *_ in rows if c is not None], dtype=float)
    histogram = np.histogram(confidences, bins=CONFIDENCE_BINS, range=(0, 1))[0]
    return Figures(
        days, library, _by_route(rows), _by_day(rows), histogram.tolist(),
        [(track, titles.get(track, "(removed)"), n) for track, n in top],
        right=sum(v == "right" and t is not None for v, t, *_ in feedback),
        wrong=sum(v == "wrong" and t is not None for v, t, *_ in feedback),
        missed=sum(v == "wrong" and t is None for v, t, *_ in feedback),
        corrections=[actual for _, _, actual, *_ in feedback if actual][-CORRECTIONS:],
        feedback_per_day=_feedback_by_day(feedback), reliability=_reliability(feedback),
        no_matches=[{**row, "created_at": row["created_at"].isoformat() + "Z"} for row in no_matches])


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
