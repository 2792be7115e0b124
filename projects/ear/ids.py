"""Ids that tell nothing: tracks' and jobs' are drawn at random, so that no user can count, from
the gaps between their own ids, what other libraries add (docs/libraries.md).

- A track id lives in 20 bits of each of its landmark keys (segments.py), so it is drawn from
  [floor, MAX_TRACK_ID], where `floor` is above every id an older ear handed out in sequence.
  Each is recorded (IssuedTrackId) and never handed out again, even after its track is
  removed: a store may hold a removed track's landmarks until its next merge. When fewer ids
  are left than asked for: `track_ids_exhausted` (507).
- A job id is drawn from [1, 2^31) (PostgreSQL's serial column is 32 bits); a clash with an
  existing job (one in tens of millions at 100 jobs) is drawn again by `new_job`.
"""
from __future__ import annotations

import secrets

from peewee import IntegrityError, fn

from .db import (TRACK_IDS_LOCK, IssuedTrackId, Job, Setting, Track, database, is_sqlite,
                 write_transaction)
from .errors import EarError
from .segments import MAX_TRACK_ID

_JOB_IDS = 2 ** 31 - 1
_DRAWS = 3  # a job id drawn again at most this often (a clash twice running: one in 10^15)


def track_ids(n: int, at_least: int = 1) -> list[int]:
    """`n` track ids never handed out before, committed at once (so that ids a crash left unused
    are skipped, never reused). `at_least`: above the ids an older ear handed out in sequence
    (the owner's store's record of them), for the first call."""
    with database.connection_context(), write_transaction():
        if not is_sqlite():  # SQLite's IMMEDIATE transaction serialises this already
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (TRACK_IDS_LOCK,))
        floor = _floor(at_least)
        issued = IssuedTrackId.select().where(IssuedTrackId.id >= floor).count()
        if MAX_TRACK_ID - floor + 1 - issued < n:
            raise EarError("track_ids_exhausted", f"ear has handed out every track id it can "
                           f"({MAX_TRACK_ID - floor + 1}): no more tracks can be added.", 507)
        chosen: set[int] = set()
        while len(chosen) < n:  # drawn again: an id drawn twice, or handed out before
            drawn = {floor + secrets.randbelow(MAX_TRACK_ID - floor + 1) for _ in range(n - len(chosen))}
            taken = {i for (i,) in IssuedTrackId.select(IssuedTrackId.id).where(
                IssuedTrackId.id.in_(sorted(drawn))).tuples()}
            chosen |= drawn - taken
        IssuedTrackId.insert_many([{"id": i} for i in sorted(chosen)]).execute()
    return sorted(chosen)


def _floor(at_least: int) -> int:
    # Fixed at the first call: above the ids an older ear gave out (the tracks it made, and the
    # sequence its owner's store kept); later ids are random, and a maximum of theirs no floor.
    row = Setting.get_or_none(Setting.key == "track_id_floor")
    if row is None:
        highest = Track.select(fn.MAX(Track.id)).scalar() or 0
        row = Setting.create(key="track_id_floor", value=str(max(highest + 1, at_least)))
    return int(row.value)


def new_job(**fields) -> Job:
    """Job.create with a random id."""
    for _ in range(_DRAWS - 1):
        try:
            with database.atomic():
                return Job.create(id=1 + secrets.randbelow(_JOB_IDS), **fields)
        except IntegrityError:
            continue
    return Job.create(id=1 + secrets.randbelow(_JOB_IDS), **fields)  # a third clash is raised
