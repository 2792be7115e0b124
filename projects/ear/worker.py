"""`ear worker`: the queue's jobs (jobs.py), one at a time, in a process of their own.

Adding a track costs seconds to minutes of CPU; done here, never in the web worker, it cannot
hold a visitor's query. The worker runs nice'd, with its own torch thread limit (config.py).
Its name (EAR_WORKER_NAME, else the host's) is its own: a lock in the data folder stops a second
worker of that name, so at its start a worker may put back in the queue what it was running
when it last died. While it works, a thread beats for it (jobs.BEAT_EVERY_S) with the job's
progress. SIGTERM or SIGINT: the job in hand goes back to the queue, and the worker exits.

A track is made and its job marked done in one commit (Catalog.store's `then`), so a worker
killed at any moment leaves either no track, which the retried job makes, or the track with
its job done; a half-stored track is never searchable (the catalog reconciles its stores).
"""
from __future__ import annotations

import json
import logging
import re
import signal
import socket
import threading
from contextlib import contextmanager
from typing import Iterator

from peewee import InterfaceError, OperationalError

from . import jobs
from .catalog import Catalog
from .db import Job, Track
from .errors import EarError
from .ingest import expected_seconds
from .reembed import queue_behind, reembed
from .runtime import in_a_child, one_heap, trim_heap
from .storage import locked

log = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_RETRY_S = 5.0  # between tries to reach a database that did not answer


class Stopping(Exception):
    """Raised inside a job's analysis when the worker has been asked to stop."""


class Worker:
    def __init__(self, catalog: Catalog, name: str = "") -> None:
        self.catalog = catalog
        self.name = name or socket.gethostname()
        if not _NAME.fullmatch(self.name):  # it names the worker's lock file
            raise EarError("bad_worker_name", f"A worker's name is letters, digits, '.', '_' and "
                           f"'-' (EAR_WORKER_NAME={self.name!r}).")
        self._stop = threading.Event()
        self._job: Job | None = None
        self._progress: float | None = None

    def run(self, poll_s: float = 1.0, until_idle: bool = False) -> int:
        """Work through the queue (waiting `poll_s` between looks when it is empty) until
        stopped, or with `until_idle` until it is empty. Returns how many jobs it ended."""
        one_heap()  # before its threads (the heartbeat, FFmpeg's timers) each grow a heap of their own
        lock = self.catalog.config.data_dir / f"worker-{self.name}.lock"
        with locked(lock, wait=False) as mine:
            if not mine:
                raise EarError("worker_running", f"An ear worker named {self.name} is running "
                               f"already (it holds {lock}); give another EAR_WORKER_NAME.", 409)
            jobs.requeue_own(self.name)
            in_a_child(self._queue_unfinished_rebuilds)
            log.info("ear worker %s: waiting for jobs", self.name)
            with self._beating():
                return self._loop(poll_s, until_idle)

    def _queue_unfinished_rebuilds(self) -> None:
        """Queue what its last life did not get to: rebuilds, and libraries still to follow a
        change of model (one that came just before a crash, say)."""
        for shelf in self.catalog.every_library():
            if shelf.index.needs_rebuild():
                self.catalog.request_rebuild(shelf.name)
        queue_behind(self.catalog)

    def stop(self, *_) -> None:
        """Stop soon: the job in hand is given back at its next progress."""
        self._stop.set()

    def stop_on_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def _loop(self, poll_s: float, until_idle: bool) -> int:
        ended = 0
        while not self._stop.is_set():
            try:
                job = jobs.claim(self.name)
            except (OperationalError, InterfaceError) as exc:  # the database restarting, say
                log.warning("cannot reach the database (%s); trying again", exc)
                self._stop.wait(_RETRY_S)
                continue
            if job is None:
                if until_idle:
                    break
                self._stop.wait(poll_s)
                continue
            ended += self._work(job)
            trim_heap()  # an analysis's temporaries are gone: give their heap back
        return ended

    def _work(self, job: Job) -> bool:
        """Run one job; whether it ended (False: given back to the queue)."""
        self._job, self._progress = job, None
        log.info("job %s: %s %s", job.id, job.kind, job.source)
        try:
            if job.kind == jobs.INGEST:
                self._ingest(job)
            elif job.kind == jobs.REEMBED:
                reembed(self.catalog, job.library, self._advance)
                jobs.finish(job)
            else:
                self.catalog.rebuild_index(job.library)
                jobs.finish(job)
            return True
        except jobs.TakenOver:  # this worker was silent too long: another has the job now
            log.warning("job %s was taken over by another worker; its result is dropped", job.id)
            return True
        except Stopping:
            jobs.give_back(job)
            return False
        except EarError as exc:
            if self._stop.is_set():  # e.g. its FFmpeg stopped with us: not the file's fault
                jobs.give_back(job)
                return False
            self._fail(job, exc.code, exc.message)
        except Exception:  # noqa: BLE001 - one job's bug must not stop the queue
            log.exception("job %s failed", job.id)
            self._fail(job, "internal", "Something went wrong in ear while doing this job.")
        finally:
            self._job = None
        return True

    def _fail(self, job: Job, code: str, message: str) -> None:
        try:
            jobs.fail(job, code, message)
        except jobs.TakenOver:
            return
        self.catalog.forget_original(job.original)  # unless a track or another job needs it

    def _ingest(self, job: Job) -> None:
        total = expected_seconds(self.catalog.originals.path(job.original))

        kept = self.catalog.prepare_original(
            job.original, job.source, json.loads(job.metadata), self.catalog.library(job.library).model(),
            job.library, lambda seconds: self._advance(seconds / total if total else None))
        if isinstance(kept, Track):  # these very bytes were added to this library before
            _duplicate(job, kept)
            return
        self.catalog.store([kept], job.library, then=lambda stored: _ended(job, *stored[0]))
        self.catalog.request_rebuild(job.library)

    def _advance(self, share: float | None) -> None:
        """Note a job's progress (0 to 1, None: unknown); raise Stopping when asked to stop."""
        if self._stop.is_set():
            raise Stopping
        self._progress = share

    @contextmanager
    def _beating(self) -> Iterator[None]:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(jobs.BEAT_EVERY_S):
                job = self._job
                if job is not None:
                    try:
                        jobs.beat(self.name, job.id, self._progress)
                    except Exception:  # noqa: BLE001 - a busy database: beat next time
                        log.warning("job %s: could not record the heartbeat", job.id)

        thread = threading.Thread(target=beat, name="ear-worker-beat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def _ended(job: Job, track: Track, created: bool) -> None:
    if created:
        jobs.finish(job, track.id)
    else:  # the same music in other bytes
        _duplicate(job, track)


def _duplicate(job: Job, track: Track) -> None:
    jobs.fail(job, "duplicate", f"This audio is in the library already: track {track.id} "
              f"({track.title}).", track.id)
