"""The query log: what ear was asked and what it answered, one `db.LoggedQuery` row per query,
and the listener's feedback on one answer.

- `record(heard, samples)` gives the answer its query id (128 random bits that no client can
  guess) and queues its row. A thread of this process writes the queue every FLUSH_S, in one
  transaction: a query never waits on the database, and a database that refuses (locked by a
  long write, gone) never fails one. Rows wait for it, at most MAX_PENDING (then the oldest are
  dropped and counted in `dropped`). A process that is killed loses at most FLUSH_S of rows.
- No audio is kept unless EAR_KEEP_QUERIES: then the clip, as ear heard it (16 kHz mono), is
  written as FLAC to `queries/<query id>.flac` by the same thread, and deleted after
  EAR_KEEP_QUERIES_DAYS, or at once when the owner turns keeping off.
- `claim(query_id, track_id)` accepts feedback on a logged answer, once each, within
  FEEDBACK_WINDOW_S: an id never logged or older is `unknown_query` (404); an answer that had
  its feedback is `feedback_already_given` (409); a track the answer did not offer is
  `track_not_in_answer` (400). The block under `claim` is given the answer's library and stores
  the verdict in the same transaction. Answers outlive a restart.
- `prune()` (the writer runs it every PRUNE_EVERY_S): rows older than EAR_LOG_DAYS and beyond
  EAR_LOG_ROWS go, the oldest first, with their audio.
"""
from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from peewee import IntegrityError

from .config import Config
from .db import Feedback, LoggedQuery, database, now, write_transaction
from .decode import SAMPLE_RATE
from .errors import EarError, NotFound
from .storage import ensure_writable, replacing

if TYPE_CHECKING:  # (not imported: `ear stats` has no need of the model that identify loads)
    from .hum import HumMatch
    from .identify import Candidate

log = logging.getLogger(__name__)

# A second behind is live enough for a dashboard, and a busy minute is 60 transactions, not one
# a query (each an fsync on SQLite).
FLUSH_S = 1.0
# Rows wait in memory while the database refuses: ~1 KB each with 100 candidates, so at most
# ~10 MB; a database down for hours loses the oldest, never a query.
MAX_PENDING = 10_000
# Clips waiting to be kept (EAR_KEEP_QUERIES), as int16: ~1 MB for a 30 s one, 16 MB at most;
# beyond, a query is logged without its audio.
MAX_PENDING_CLIPS = 16
# A listener says "right" or "wrong" within minutes of seeing the answer; an hour leaves room for
# a tab left open, and no more, so that a leaked id cannot be used to rate answers for days.
FEEDBACK_WINDOW_S = 3600.0
PRUNE_EVERY_S = 3600.0  # the bounds are in days and in many rows: an hour over them is nothing
_ID_BYTES = 16  # 128 random bits: unguessable; 22 characters in the JSON
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what token_urlsafe gives: nothing else is looked up
_INSERT_ROWS = 500  # rows inserted at a time (SQLite's limit on parameters)
_CLIP_SUFFIX = ".flac"


@dataclass(frozen=True)
class Answered:
    """The best match of an answer."""

    track_id: int
    offset_s: float  # where in the track: the clip's start, or the hummed melody's
    score: float
    confidence: float | None  # None: the path has no calibrated confidence (humming)
    evidence: tuple[str, ...]  # which evidence matched alone: "fingerprint", "embedding", "melody"


def answered(best: Candidate | HumMatch | None) -> Answered | None:
    """An answer's best match (an identification's, or a hum's) as the log keeps it."""
    if best is None:
        return None
    if hasattr(best, "start_s"):  # a hum: where the melody starts, and no calibrated confidence
        return Answered(best.track_id, best.start_s, best.score, None, ("melody",))
    return Answered(best.track.id, best.offset_s, best.score, best.confidence, best.evidence)


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


class Timing:
    """A query's clock: made as its decoding starts, told when it ends (`decoded`); `heard`
    takes the match's time up to its call."""

    def __init__(self) -> None:
        self.started = self.decoded_at = time.perf_counter()

    def decoded(self) -> None:
        self.decoded_at = time.perf_counter()

    def heard(self, route: str, library: str, samples: np.ndarray, offered: Iterable[int],
              best: Answered | None) -> Heard:
        return Heard(route, library, samples.size / SAMPLE_RATE, (self.decoded_at - self.started) * 1000,
                     (time.perf_counter() - self.decoded_at) * 1000, tuple(offered), best)


class QueryLog:
    """This process's writer of the query log (thread-safe: `ear serve` is threaded)."""

    def __init__(self, config: Config, feedback_window_s: float = FEEDBACK_WINDOW_S) -> None:
        self.config = config
        self.feedback_window_s = feedback_window_s
        self.dropped = 0  # rows lost while the database refused them
        self._pending: deque[tuple[dict, np.ndarray | None]] = deque()
        self._database = _bound()  # rows are written to the database bound now, never another
        self._pending_clips = 0
        self._queue = threading.Lock()
        # One write at a time, so rows go in the order queued; and none while this process forks
        # (a child must not inherit the database driver's locks taken mid-write).
        self._writing = threading.Lock()
        os.register_at_fork(before=self._writing.acquire, after_in_parent=self._writing.release,
                            after_in_child=self._writing.release)
        self._writer_pid = 0  # the process whose thread writes (a forked child starts its own)
        self._pruned_at = 0.0

    def record(self, heard: Heard, samples: np.ndarray | None = None) -> str:
        """Queue the row of a query (with its clip, if the owner keeps them); its query id."""
        query_id = secrets.token_urlsafe(_ID_BYTES)
        best = asdict(heard.best) if heard.best else {}
        row = {"query_id": query_id, "library": heard.library, "route": heard.route,
               "created_at": now(), "clip_s": round(heard.clip_s, 3),
               "decode_ms": round(heard.decode_ms, 1), "match_ms": round(heard.match_ms, 1),
               **{k: v for k, v in best.items() if k != "evidence"},
               "evidence": ",".join(best.get("evidence", ())),
               "offered": json.dumps(list(dict.fromkeys(int(i) for i in heard.offered)))}
        clip = None
        if self.config.keep_queries and samples is not None:
            clip = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        with self._queue:
            if clip is not None and self._pending_clips >= MAX_PENDING_CLIPS:
                clip = None
            while len(self._pending) >= MAX_PENDING:
                self._forget_oldest()
            self._pending.append((row, clip))
            self._pending_clips += clip is not None
        self._start_writer()
        return query_id

    def flush(self) -> None:
        """Write the queued rows now (and their clips); if the database refuses, they stay queued
        and the error is raised."""
        with self._writing:
            with self._queue:
                batch, self._pending_clips = list(self._pending), 0
                self._pending.clear()
            if not batch or _bound() != self._database:
                return  # (a process that binds another database, as tests do, drops them)
            rows: list[dict] = []  # with their clips written: queued again without them
            try:
                for row, clip in batch:
                    rows.append(self._keep_clip(row, clip))
                with database.connection_context(), write_transaction():
                    for start in range(0, len(rows), _INSERT_ROWS):
                        LoggedQuery.insert_many(rows[start: start + _INSERT_ROWS]).execute()
            except BaseException:
                self._requeue([(row, None) for row in rows] + batch[len(rows):])
                raise

    @contextmanager
    def claim(self, query_id: str, track_id: int | None) -> Iterator[str]:
        """Feedback on answer `query_id` (about `track_id`, if given): raises the error that
        refuses it, or runs the block (which stores the verdict) in one transaction with the
        check; the block is given the library the answer searched."""
        self._flush_quietly()  # an answer given a moment ago may still be queued
        try:
            with database.connection_context(), write_transaction():
                row = LoggedQuery.get_or_none(LoggedQuery.query_id == query_id) if _ID.fullmatch(query_id) else None
                age = (now() - row.created_at).total_seconds() if row else None
                if age is None or age > self.feedback_window_s:
                    raise NotFound("unknown_query", "This query_id is not one of ear's recent answers "
                                   f"(feedback is taken for {self.feedback_window_s / 60:g} "
                                   "minutes): identify the clip again.")
                if Feedback.select().where(Feedback.query_id == query_id).exists():
                    raise _already_given()
                if track_id is not None and track_id not in json.loads(row.offered):
                    raise EarError("track_not_in_answer", "track_id is not a track this answer offered.")
                yield row.library
        except IntegrityError:  # another process stored a verdict on it in the meantime
            raise _already_given() from None

    def prune(self) -> int:
        """Apply the log's bounds (see the module's docstring); the rows deleted."""
        if _bound() != self._database:
            return 0
        cutoff = now() - dt.timedelta(days=self.config.log_days)
        clip_cutoff = now() - dt.timedelta(days=self.config.keep_queries_days if self.config.keep_queries else 0)
        with database.connection_context(), write_transaction():
            newest_gone = (LoggedQuery.select(LoggedQuery.created_at)
                           .order_by(LoggedQuery.created_at.desc())
                           .offset(self.config.log_rows).limit(1).scalar())
            if newest_gone is not None:  # beyond the row bound: the oldest go, whatever their age
                cutoff = max(cutoff, newest_gone + dt.timedelta(microseconds=1))
            gone = LoggedQuery.created_at < cutoff
            clips = list(LoggedQuery.select(LoggedQuery.query_id, LoggedQuery.audio).where(
                (LoggedQuery.audio != "") & (gone | (LoggedQuery.created_at < clip_cutoff))).tuples())
            deleted = LoggedQuery.delete().where(gone).execute()
            LoggedQuery.update(audio="").where(LoggedQuery.query_id.in_([q for q, _ in clips])).execute()
        for _, name in clips:
            (self.config.queries_dir / name).unlink(missing_ok=True)
        self._pruned_at = time.monotonic()
        return deleted

    def close(self) -> None:
        """Write what is queued before the process ends (a CLI's queries, a worker's last)."""
        self._flush_quietly()

    def _keep_clip(self, row: dict, clip: np.ndarray | None) -> dict:
        if clip is None:
            return row
        ensure_writable(self.config.queries_dir)
        name = row["query_id"] + _CLIP_SUFFIX
        with replacing(self.config.queries_dir / name) as fh:
            sf.write(fh, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return {**row, "audio": name}

    def _requeue(self, batch: list[tuple[dict, np.ndarray | None]]) -> None:
        with self._queue:
            self._pending.extendleft(reversed(batch))
            self._pending_clips += sum(clip is not None for _, clip in batch)
            while len(self._pending) > MAX_PENDING:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, clip = self._pending.popleft()
        self._pending_clips -= clip is not None
        self.dropped += 1

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 (the rows stay queued; the writer says why)
            pass

    def _start_writer(self) -> None:
        if self._writer_pid == os.getpid():
            return
        with self._queue:
            if self._writer_pid == os.getpid():
                return
            self._writer_pid = os.getpid()
        threading.Thread(target=self._write_forever, name="ear-query-log", daemon=True).start()
        atexit.register(self.close)

    def _write_forever(self) -> None:
        failing = False
        while True:
            time.sleep(FLUSH_S)
            try:
                self.flush()
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    with self._writing:
                        self.prune()
                failing = False
            except Exception:  # noqa: BLE001 (never let the writer die: the rows wait)
                if not failing:
                    log.exception("the query log cannot be written now; its rows wait in memory")
                failing = True


def _bound() -> str:
    return f"{type(database.obj).__name__}:{database.obj.database}"


def _already_given() -> EarError:
    return EarError("feedback_already_given", "This answer has had its feedback already.", 409)
