"""The query log: what ear was asked and what it answered, one `db.LoggedQuery` row per query
(heard.py), and the listener's feedback on one answer.

- `record(heard, samples)` gives the answer its query id (128 random bits) and queues its row;
  a thread of this process writes the queue every FLUSH_S in one transaction. A query never
  waits on the database, and a database that refuses (locked, gone) never fails one: rows wait,
  at most MAX_PENDING (the oldest dropped beyond, counted in `dropped`); a killed process loses
  at most FLUSH_S of them.
- No audio is kept unless EAR_KEEP_QUERIES: then the clip ear heard (16 kHz mono) goes to
  `queries/<query id>.flac` by the same thread, for EAR_KEEP_QUERIES_DAYS (none once off).
- `claim(query_id, track_id)`: feedback on a logged answer, once each, within FEEDBACK_WINDOW_S,
  across restarts; else `unknown_query` (404), `feedback_already_given` (409), or
  `track_not_in_answer` (400). The block under it gets the answer's library and stores the
  verdict in the same transaction.
- `prune()` (hourly): rows older than EAR_LOG_DAYS and beyond EAR_LOG_ROWS go, with their audio.
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
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import soundfile as sf
from peewee import IntegrityError

from .config import Config
from .db import INSERT_ROWS, Feedback, LoggedQuery, database, now, write_transaction
from .decode import SAMPLE_RATE
from .errors import EarError, NotFound
from .heard import Heard
from .storage import ensure_writable, replacing

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
_CLIP_SUFFIX = ".flac"  # lossless, small, and played by every browser (the dashboard's ▶)


class QueryLog:
    """This process's writer of the query log (thread-safe: `ear serve` is threaded)."""

    def __init__(self, config: Config, feedback_window_s: float = FEEDBACK_WINDOW_S) -> None:
        self.config = config
        self.feedback_window_s = feedback_window_s
        self.dropped = 0  # rows lost while the database refused them
        self._pending: deque[tuple[dict, np.ndarray | None]] = deque()  # (row, clip or None)
        self._pending_clips = 0
        self._database = _bound()  # rows are written to the database bound now, never another
        self._queue = threading.Lock()
        # One write at a time, so rows go in the order queued; and none while this process forks
        # (a child must not inherit the database driver's locks taken mid-write: _before_fork).
        self._writing = threading.Lock()
        self._writer_pid = 0  # the process whose thread writes (a forked child starts its own)
        self._pruned_at = 0.0
        self._failing = False
        _LOGS.add(self)

    def record(self, heard: Heard, samples: np.ndarray | None = None) -> str:
        """Queue the row of a query (with its clip, if the owner keeps them); its query id."""
        query_id = secrets.token_urlsafe(_ID_BYTES)
        row = {**heard.row(), "query_id": query_id, "created_at": now()}
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
            rows = [self._keep_clip(row, clip) for row, clip in batch]
            try:
                with database.connection_context(), write_transaction():
                    for start in range(0, len(rows), INSERT_ROWS):
                        # A row written already (a flush cut short after its commit) stays as it is.
                        LoggedQuery.insert_many(rows[start: start + INSERT_ROWS]).on_conflict_ignore().execute()
            except BaseException:
                self._requeue([(row, None) for row in rows])  # their clips are written already
                raise

    @contextmanager
    def claim(self, query_id: str, track_id: int | None) -> Iterator[str]:
        """Feedback on answer `query_id` (about `track_id`, if given): raises the error that
        refuses it, or runs the block (which stores the verdict) in one transaction with the
        check; the block is given the library the answer searched."""
        self.close()  # an answer given a moment ago may still be queued
        try:
            with database.connection_context(), write_transaction():
                row = LoggedQuery.get_or_none(LoggedQuery.query_id == query_id) if is_query_id(query_id) else None
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
        keep_days = self.config.keep_queries_days if self.config.keep_queries else 0
        clip_cutoff = now() - dt.timedelta(days=keep_days)
        with database.connection_context(), write_transaction():
            kept = (LoggedQuery.select(LoggedQuery.query_id)  # the newest, within the row bound
                    .order_by(LoggedQuery.created_at.desc(), LoggedQuery.query_id.desc())
                    .limit(self.config.log_rows))
            gone = (LoggedQuery.created_at < now() - dt.timedelta(days=self.config.log_days)) | (
                LoggedQuery.query_id.not_in(kept))
            clips = [name for (name,) in LoggedQuery.select(LoggedQuery.audio).where(
                (LoggedQuery.audio != "") & (gone | (LoggedQuery.created_at < clip_cutoff))).tuples()]
            deleted = LoggedQuery.delete().where(gone).execute()
            LoggedQuery.update(audio="").where(
                (LoggedQuery.audio != "") & (LoggedQuery.created_at < clip_cutoff)).execute()
        for name in clips:
            (self.config.queries_dir / name).unlink(missing_ok=True)
        self._sweep_clips(time.time() - keep_days * 86400)
        self._pruned_at = time.monotonic()
        return deleted

    def _sweep_clips(self, before: float) -> None:
        """Delete kept clips older than `before` (a time stamp) whichever row named them, or
        none did (a row dropped while the database refused, a process killed before its row):
        a visitor's audio never outstays EAR_KEEP_QUERIES_DAYS."""
        if not self.config.queries_dir.is_dir():
            return
        for path in self.config.queries_dir.iterdir():
            try:
                if path.stat().st_mtime < before:
                    path.unlink()
            except FileNotFoundError:
                pass

    def _keep_clip(self, row: dict, clip: np.ndarray | None) -> dict:
        """The row, naming its clip once written; a clip that cannot be (a full disk, a folder
        made by another user) is not kept, and the row goes without it."""
        if clip is None:
            return row
        name = row["query_id"] + _CLIP_SUFFIX
        try:
            ensure_writable(self.config.queries_dir)
            with replacing(self.config.queries_dir / name) as fh:
                sf.write(fh, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        except (OSError, EarError, sf.LibsndfileError):
            log.exception("a query's audio could not be kept; its row is logged without it")
            return row
        return {**row, "audio": name}

    def _requeue(self, batch: list[tuple[dict, np.ndarray | None]]) -> None:
        with self._queue:
            self._pending.extendleft(reversed(batch))
            self._pending_clips += sum(clip is not None for _, clip in batch)
            while len(self._pending) > MAX_PENDING:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        self._pending_clips -= self._pending.popleft()[1] is not None
        self.dropped += 1

    def close(self) -> None:
        """Write what is queued now, if the database takes it (before the process ends; before
        feedback is claimed); else the rows stay queued, and the writer says why."""
        try:
            self.flush()
        except Exception:  # noqa: BLE001
            pass

    def _start_writer(self) -> None:
        if self._writer_pid == os.getpid():
            return
        with self._queue:
            if self._writer_pid == os.getpid():
                return
            self._writer_pid = os.getpid()
        # The thread holds the log weakly: a log let go (an app a test made) ends its thread.
        threading.Thread(target=_write_while_alive, args=(weakref.ref(self),), name="ear-query-log",
                         daemon=True).start()

    def _write_now(self) -> None:
        try:
            self.flush()
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                with self._writing:
                    self.prune()
            self._failing = False
        except Exception:  # noqa: BLE001 (never let the writer die: the rows wait)
            if not self._failing:
                log.exception("the query log cannot be written now; its rows wait in memory")
            self._failing = True

    def _forked(self) -> None:
        """In a forked child: the rows queued are the parent's to write; the locks are new."""
        self._pending.clear()
        self._pending_clips = 0
        self._queue, self._writing = threading.Lock(), threading.Lock()
        self._writer_pid = 0


_LOGS: weakref.WeakSet[QueryLog] = weakref.WeakSet()  # this process's logs, for fork and exit
_held: list[QueryLog] = []  # the logs whose writing lock a fork in progress holds
_forking = threading.Lock()  # one fork at a time holds them (two threads may fork at once)


def _write_while_alive(ref: weakref.ref[QueryLog]) -> None:
    while True:
        time.sleep(FLUSH_S)
        query_log = ref()
        if query_log is None:
            return
        query_log._write_now()
        del query_log


def _before_fork() -> None:
    _forking.acquire()
    _held[:] = list(_LOGS)
    for query_log in _held:
        query_log._writing.acquire()


def _after_fork_in_parent() -> None:
    for query_log in _held:
        query_log._writing.release()
    _held.clear()
    _forking.release()


def _after_fork_in_child() -> None:
    global _forking
    for query_log in list(_LOGS):  # a log made while the fork began too: new locks for all
        query_log._forked()
    _held.clear()
    _forking = threading.Lock()


def close_all() -> None:
    """Write every log's queued rows (at exit, and before Gunicorn's worker skips its teardown)."""
    for query_log in list(_LOGS):
        query_log.close()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
atexit.register(close_all)


def is_query_id(text: str) -> bool:
    """Could `text` be one of ear's query ids? Nothing else is looked up."""
    return bool(_ID.fullmatch(text))


def _bound() -> str:
    return f"{type(database.obj).__name__}:{database.obj.database}"


def _already_given() -> EarError:
    return EarError("feedback_already_given", "This answer has had its feedback already.", 409)
