"""The queue: work for `ear worker`, kept in the catalog database.

A job is an original ear keeps (originals.py) plus what to do with it (`ingest`), or a rebuild
of a library's embedding indexes (`reindex`, or `reembed` after a change of model); its id is random (ids.py). It goes queued → running → done | failed. A worker claims
the oldest queued job in one transaction (with PostgreSQL, `FOR UPDATE SKIP LOCKED`, so that
several workers never take the same one) and beats while it works. A job whose worker stopped
beating (killed, or its machine stopped) is queued again; one that was started MAX_ATTEMPTS
times without ending fails, so that a file that kills its worker cannot do so for ever.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Callable, TypeVar

from peewee import InterfaceError, OperationalError, fn

from .db import OWNER_LIBRARY, Job, database, now, write_transaction
from .ids import new_job

INGEST, REINDEX, REEMBED = "ingest", "reindex", "reembed"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
UNFINISHED = (QUEUED, RUNNING)
BEAT_EVERY_S = 1.0  # how often a working worker says so, with its progress
# A worker silent this long is gone: thirty missed beats, so that a worker held back by the
# machine's load (it runs nice'd) or a slow disk is not taken for dead.
STALE_AFTER_S = 30.0
MAX_ATTEMPTS = 3
KEEP_FINISHED_DAYS = 30  # finished jobs are listed this long, then deleted
RETRY_S = 5.0  # between a worker's tries to reach a database that did not answer
UNREACHABLE = (OperationalError, InterfaceError)  # what a database that does not answer raises

log = logging.getLogger(__name__)
T = TypeVar("T")


def queue_ingest(original: str, source: str, metadata: dict[str, str],
                 library: str = OWNER_LIBRARY) -> Job:
    """Queue adding a kept original as a track of `library`; durable when this returns."""
    with database.connection_context():
        return new_job(kind=INGEST, library=library, original=original, source=source,
                       metadata=json.dumps(metadata))


def queue_reindex(library: str = OWNER_LIBRARY, kind: str = REINDEX) -> None:
    """Queue a rebuild of a library's embedding indexes (`reembed`: with every track embedded
    again by the serving model, models.py), unless one is queued already (it will see every
    change made before it starts)."""
    with database.connection_context(), write_transaction():
        if not Job.select().where(Job.kind == kind, Job.status == QUEUED,
                                  Job.library == library).exists():
            new_job(kind=kind, library=library)


def claim(worker: str) -> Job | None:
    """The oldest queued job (first queued, first done), now running for `worker`; None when
    there is none."""
    with database.connection_context(), write_transaction():
        _requeue_stale()
        query = Job.select().where(Job.status == QUEUED).order_by(Job.created_at, Job.id).limit(1)
        if database.for_update:
            query = query.for_update(skip_locked=True)
        job = query.first()
        if job is None:
            return None
        job.status, job.worker, job.attempts, job.progress = RUNNING, worker, job.attempts + 1, 0.0
        job.started_at = job.heartbeat = now()
        job.save()
        return job


def unless_unreachable(ask: Callable[[], T], pause: Callable[[float], object]) -> T | None:
    """`ask()`'s answer; None, after `pause(RETRY_S)`, if the database did not answer (restarting,
    say): told in the log instead of ending the worker that asked."""
    try:
        return ask()
    except UNREACHABLE as exc:
        log.warning("cannot reach the database (%s); trying again", exc)
        pause(RETRY_S)
        return None


def waiting() -> bool:
    """Whether a job waits to be claimed (after queueing again those of silent workers)."""
    with database.connection_context(), write_transaction():
        _requeue_stale()
        return Job.select().where(Job.status == QUEUED).exists()


def _requeue_stale() -> None:
    stale = ((Job.status == RUNNING)
             & (Job.heartbeat < now() - dt.timedelta(seconds=STALE_AFTER_S)))
    _fail_worn_out(stale)
    Job.update(status=QUEUED, worker="").where(stale).execute()


def _fail_worn_out(condition) -> None:
    Job.update(status=FAILED, finished_at=now(), error_code="worker_died",
               error_message=f"The worker stopped {MAX_ATTEMPTS} times while working on this "
                             "(out of memory?); it is not tried again.").where(
        condition & (Job.attempts >= MAX_ATTEMPTS)).execute()


def requeue_own(worker: str) -> None:
    """At a worker's start, and when the child doing its jobs died: what it was running goes
    back to the queue now, without waiting for its beats to go stale (a worker's name is its
    own; see standby.py)."""
    with database.connection_context(), write_transaction():
        mine = (Job.status == RUNNING) & (Job.worker == worker)
        _fail_worn_out(mine)
        Job.update(status=QUEUED, worker="").where(mine).execute()


def beat(worker: str, job_id: int, progress: float | None = None) -> None:
    """`worker` is alive and on `job_id` (with its progress, 0 to 1, when known)."""
    values = {Job.heartbeat: now()}
    if progress is not None:
        values[Job.progress] = min(max(progress, 0.0), 1.0)
    with database.connection_context():
        Job.update(values).where(Job.id == job_id, Job.worker == worker,
                                 Job.status == RUNNING).execute()


class TakenOver(Exception):
    """The job is no longer its worker's: it was silent too long, and the job queued again."""


def finish(job: Job, track_id: int | None = None) -> None:
    """Done (with the track it made): called inside the transaction that made the track, so
    that the track and the job's end are one commit; raises TakenOver (undoing the track)
    when the job is no longer this worker's."""
    _end(job, status=DONE, progress=1.0, track_id=track_id)


def fail(job: Job, code: str, message: str, track_id: int | None = None) -> None:
    _end(job, status=FAILED, error_code=code, error_message=message, track_id=track_id)


def _end(job: Job, **values) -> None:
    with database.connection_context():
        if not Job.update(finished_at=now(), **values).where(_mine(job)).execute():
            raise TakenOver(f"job {job.id} is no longer {job.worker}'s")


def give_back(job: Job) -> None:
    """A worker asked to stop returns its job to the queue; the start is not counted."""
    with database.connection_context():
        Job.update(status=QUEUED, worker="", progress=0.0,
                   attempts=Job.attempts - 1).where(_mine(job)).execute()


def _mine(job: Job):
    """The job's row, while it is still running for the worker that claimed it."""
    return (Job.id == job.id) & (Job.worker == job.worker) & (Job.status == RUNNING)


def get(job_id: int, library: str | None = None) -> Job | None:
    """Job `job_id` if it is `library`'s (None: any library's); the same query whether it is
    another's or no one's."""
    if not 0 < job_id < 2 ** 63:
        return None
    with database.connection_context():
        return Job.get_or_none((Job.id == job_id) & _of(library))


def recent(limit: int = 100, library: str | None = None) -> list[Job]:
    """The newest jobs of `library` (None: of every library) first."""
    with database.connection_context():
        return list(Job.select().where(_of(library))
                    .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit))


def _of(library: str | None):
    return (Job.library == library) if library is not None else (Job.id > 0)


def counts() -> dict[str, int]:
    """How many jobs are queued and running."""
    with database.connection_context():
        rows = (Job.select(Job.status, fn.COUNT(Job.id)).where(Job.status.in_(UNFINISHED))
                .group_by(Job.status).tuples())
        return {QUEUED: 0, RUNNING: 0, **dict(rows)}


def prune() -> int:
    """Delete jobs finished more than KEEP_FINISHED_DAYS ago; how many went."""
    cutoff = now() - dt.timedelta(days=KEEP_FINISHED_DAYS)
    with database.connection_context():
        return Job.delete().where(Job.status.in_((DONE, FAILED)), Job.finished_at < cutoff).execute()
