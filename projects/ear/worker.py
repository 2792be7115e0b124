"""The jobs of the queue (jobs.py), one at a time, in a process of their own: the child that
`ear worker` (standby.py) forks when a job comes, or a test's.

Adding a track costs seconds to minutes of CPU; done here, never in the web worker, it cannot
hold a visitor's query. The worker runs nice'd, with its own torch thread limit (config.py).
While it works, a thread beats for it (jobs.BEAT_EVERY_S) with the job's progress. SIGTERM or
SIGINT: the job in hand goes back to the queue, and the worker exits.

A track is made and its job marked done in one commit (Catalog.store's `then`), so a worker
killed at any moment leaves either no track, which the retried job makes, or the track with
its job done; a half-stored track is never searchable (the catalog reconciles its stores).
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from . import jobs
from .catalog import Catalog
from .db import Job, Track
from .errors import EarError
from .ingest import expected_seconds
from .reembed import reembed
from .runtime import trim_heap

log = logging.getLogger(__name__)


class Stopping(Exception):
    """Raised inside a job's analysis when the worker has been asked to stop."""


class Worker:
    def __init__(self, catalog: Catalog, name: str) -> None:
        self.catalog = catalog
        self.name = name  # whose jobs these are in the queue (standby.worker_name)
        self._stop = threading.Event()
        self._job: Job | None = None
        self._progress: float | None = None

    def run(self, linger_s: float = 0.0, poll_s: float = 1.0) -> int:
        """Do the queue's jobs until stopped or until the queue has been empty for `linger_s`
        (looking every `poll_s`). Returns how many jobs it ended."""
        with self._beating():
            return self._loop(linger_s, poll_s)

    def stop(self, *_) -> None:
        """Stop soon: the job in hand is given back at its next progress."""
        self._stop.set()

    def stop_on_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def _loop(self, linger_s: float, poll_s: float) -> int:
        ended, idle_since, trimmed = 0, time.monotonic(), True
        while not self._stop.is_set():
            job = jobs.unless_unreachable(lambda: jobs.claim(self.name), self._stop.wait)
            if job is None:
                if not trimmed:  # the jobs' temporaries are gone: give their heap back (not
                    trim_heap()  # between two jobs, where the next one reuses it)
                    trimmed = True
                if time.monotonic() - idle_since >= linger_s:
                    break
                self._stop.wait(poll_s)
                continue
            ended += self._work(job)
            trimmed, idle_since = False, time.monotonic()
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
