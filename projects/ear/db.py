"""The catalog database: peewee models on SQLite (WAL) in the data directory, or on PostgreSQL
when EAR_DATABASE_URL says so (`postgresql://user:password@host/name`).

One `database` proxy, bound by `init_db`. Connections are taken per use and given back after
(to a small pool on PostgreSQL, where opening one starts a server process); a process that
forks (Gunicorn's preloaded master) must hold none at fork time: `init_db` leaves none open,
and `close_idle` closes the pool's. `init_db` also adds the columns that a database made by an
older ear lacks, under a lock, as several processes may start at once.
"""
from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path, PurePath

from peewee import (AutoField, BlobField, CharField, DatabaseProxy, DateTimeField, Field, FloatField,
                    ForeignKeyField, IntegerField, Model, SQL, SqliteDatabase, TextField)
from playhouse import db_url
from playhouse.migrate import SchemaMigrator, migrate

from .errors import EarError
from .storage import replacing

database = DatabaseProxy()
_SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # Each commit fsynced: an upload answered 202 is queued for good, even if the machine
    # stops the next moment. Writes are rare (uploads, jobs, feedback); queries only read.
    "synchronous": "full",
    "busy_timeout": 10000,  # the CLI, the service and the worker may write at once
    "foreign_keys": 1,
}
# A process serves one request (or job) at a time, plus the worker's heartbeat thread: a few
# connections are all it ever holds; an idle one is closed after five minutes.
_POOL = {"max_connections": 4, "stale_timeout": 300}
# Rows a single INSERT carries: at ~15 columns, 60 rows stay under the 999 parameters an older
# SQLite (before 3.32) allows in one statement.
INSERT_ROWS = 60
_SCHEMA_LOCK = 0x6561_7200  # "ear": the PostgreSQL advisory lock held while the schema changes
TRACK_IDS_LOCK = 0x6561_7201  # ...and the one held while track ids are handed out (ids.py)
METADATA_FIELDS = ("title", "artist", "album", "genre")  # what an owner may say of a track
OWNER_LIBRARY = "owner"  # the site owner's library: every row made before there were users
_IN_LIBRARY = {"default": OWNER_LIBRARY, "constraints": [SQL(f"DEFAULT '{OWNER_LIBRARY}'")]}


def now() -> dt.datetime:
    """The time as the database keeps it: UTC, without a zone."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database


class Track(BaseModel):
    # Ids come from ids.py (random, never reused, unique across libraries), not from SQLite.
    id = AutoField()
    library = CharField(**_IN_LIBRARY)  # whose: libraries.py
    title = TextField()
    artist = TextField(default="")
    album = TextField(default="")
    genre = TextField(default="")
    duration = FloatField()
    source = TextField()  # a label (a file name or the owner's path): shown, never opened
    content_hash = CharField()  # unique in its library: two users may hold the same music
    added_at = DateTimeField(default=now)
    # The audio that may be opened (played, re-embedded): an original ear keeps (originals.py),
    # or a file the owner's shell linked. Neither ever comes from a request.
    # (An SQL default too, so that an older ear, rolled back to, can still insert rows.)
    original = CharField(default="", index=True, constraints=[SQL("DEFAULT ''")])
    linked_path = TextField(default="", constraints=[SQL("DEFAULT ''")])

    class Meta:
        indexes = ((("library", "content_hash"), True),)

    def to_json(self, brief: bool = False, path: bool = True) -> dict:
        """`path`: the source as stored (a server path for files the owner ingested); else
        only its last part, a file name for people (what the public sees over HTTP)."""
        source = self.source if path else PurePath(self.source).name
        data = {"id": self.id, "title": self.title, "artist": self.artist, "source": source,
                "library": self.library}
        if not brief:
            data.update(album=self.album, genre=self.genre, duration=round(self.duration, 3),
                        added_at=_iso(self.added_at))
        return data


class Feedback(BaseModel):
    """A listener's verdict on an answer, kept for later evaluation."""

    track_id = IntegerField(null=True)  # the answer shown (no foreign key: tracks may go)
    verdict = CharField()  # "right" or "wrong"
    actual = TextField(default="")  # "it was …", as typed
    offset_s = FloatField(null=True)
    confidence = FloatField(null=True)
    created_at = DateTimeField(default=now)
    # The answer it is on (querylog.py), one verdict each (null: rows from before query ids).
    query_id = CharField(null=True, unique=True)
    library = CharField(**_IN_LIBRARY)  # the library that answer searched

    def to_json(self) -> dict:
        return {"id": self.id, "track_id": self.track_id, "verdict": self.verdict,
                "actual": self.actual, "offset_s": self.offset_s, "confidence": self.confidence,
                "created_at": _iso(self.created_at), "query_id": self.query_id}


class Job(BaseModel):
    """Work for `ear worker` (jobs.py): a kept original to add as a track, or an index rebuild."""

    kind = CharField()  # "ingest" or "reindex"
    library = CharField(**_IN_LIBRARY)  # the library it adds to, or whose indexes it rebuilds
    status = CharField(default="queued", index=True)  # queued → running → done | failed
    original = CharField(default="")  # the kept upload to ingest (originals.py)
    source = TextField(default="")  # its label, as the track will carry it
    metadata = TextField(default="{}")  # the owner's title/artist/album/genre, as JSON
    progress = FloatField(default=0.0)  # 0 to 1
    track_id = IntegerField(null=True)  # the track made (done), or the one it duplicates
    error_code = CharField(default="")
    error_message = TextField(default="")
    attempts = IntegerField(default=0)  # starts; a job that keeps killing its worker stops
    worker = CharField(default="")  # the name of the worker running it
    heartbeat = DateTimeField(null=True)  # when that worker last said it was alive
    created_at = DateTimeField(default=now)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    def to_json(self) -> dict:
        data = {"id": self.id, "kind": self.kind, "library": self.library, "status": self.status,
                "progress": round(self.progress, 3), "source": self.source,
                **{name: _iso(getattr(self, name))
                   for name in ("created_at", "started_at", "finished_at")}}
        if self.error_code:
            data["error"] = {"code": self.error_code, "message": self.error_message}
        return data


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


class User(BaseModel):
    """Someone the owner let in (users.py): their key opens their own library, named as they are."""

    name = CharField(unique=True)
    key_hash = CharField(unique=True)  # SHA-256 of the key; the key itself is shown once
    created_at = DateTimeField(default=now)
    revoked_at = DateTimeField(null=True)

    def to_json(self) -> dict:
        return {"name": self.name, "created_at": _iso(self.created_at),
                "revoked_at": _iso(self.revoked_at)}


class IssuedTrackId(BaseModel):
    """Every track id ever handed out (ids.py): a row is never deleted, so an id is never reused."""

    id = IntegerField(primary_key=True)


class Setting(BaseModel):
    """What the database says of itself: `catalog_id`, the catalog it holds; `track_id_floor`."""

    key = CharField(primary_key=True)
    value = TextField()


class Melody(BaseModel):
    """A track's pitch contour (pitch.py: float16 MIDI numbers, NaN unvoiced), for query by
    humming: a few KB a track, written in the transaction that adds the track, gone with it."""

    track = ForeignKeyField(Track, primary_key=True, on_delete="CASCADE")
    library = CharField(index=True)  # the track's, so that a library's melodies load alone
    contour = BlobField()
    stamp = IntegerField()  # random, new at every write: a reader's sum over a library sees a change


class LoggedQuery(BaseModel):
    """What ear was asked and what it answered (querylog.py): no audio, a few hundred bytes."""

    query_id = CharField(primary_key=True)  # 128 random bits, as the answer carried it
    library = CharField(**_IN_LIBRARY)  # the library it searched
    route = CharField()  # "identify", "similar" or "hum"
    created_at = DateTimeField(default=now, index=True)
    clip_s = FloatField()  # seconds of audio decoded
    decode_ms = FloatField()
    match_ms = FloatField()
    track_id = IntegerField(null=True)  # the best match; null: "no match" (no foreign key: tracks may go)
    offset_s = FloatField(null=True)  # where in it
    score = FloatField(null=True)
    confidence = FloatField(null=True)
    evidence = CharField(default="")  # which evidence matched alone: "fingerprint,embedding", "melody"
    offered = TextField(default="[]")  # JSON: every track the answer named, matches and candidates
    audio = CharField(default="")  # the clip's file under queries/, kept only if EAR_KEEP_QUERIES
    error = CharField(default="")  # the error code it ended in (no answer then), e.g. no_melody


MODELS = [Track, Feedback, Job, User, IssuedTrackId, Setting, Melody, LoggedQuery]


def init_db(where: Path | str) -> None:
    """Bind the models to the SQLite file at `where` (a Path) or the database at a URL (a str:
    postgresql://..., sqlite:///...), creating the tables; leaves no connection open."""
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
        database.initialize(SqliteDatabase(str(where), pragmas=_SQLITE_PRAGMAS))
    elif where.startswith(("postgres://", "postgresql://")):
        scheme, rest = where.split("://", 1)
        database.initialize(db_url.connect(f"{scheme}+pool://{rest}", **_POOL))
    else:
        database.initialize(db_url.connect(where, **(
            {"pragmas": _SQLITE_PRAGMAS} if where.startswith("sqlite") else {})))
    with database.connection_context(), write_transaction():
        if not is_sqlite():  # processes started together wait for the first one's tables
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        # Columns first: creating an index on a column not there yet would not fail but index a
        # constant (SQLite reads an unknown "name" as a string), and block the real one.
        _add_new_columns()
        _drop_old_indexes()
        database.create_tables(MODELS)
    close_idle()


def pair_with_folder(marker: Path, folder_has_tracks: bool) -> None:
    """The database and the data folder's stores (fingerprints, indexes) are one catalog, named
    by a random id kept in both. Refuse a database that is another catalog's, or an empty one
    beside a folder that holds tracks (a new EAR_DATABASE_URL): reconciling them would delete
    every track from the folder."""
    folder_id = marker.read_text().strip() if marker.exists() else None
    with database.connection_context(), write_transaction():
        row = Setting.get_or_none(Setting.key == "catalog_id")
        database_id = row.value if row else None
        strange = folder_id is None or database_id != folder_id
        if (folder_id and database_id and strange) or (
                strange and folder_has_tracks and not Track.select().exists()):
            raise EarError("database_mismatch", f"The tracks in {marker.parent} are not this "
                           "database's catalog (EAR_DATABASE_URL names another, or an empty one): "
                           "point EAR_DATABASE_URL at the database that holds them, or copy "
                           "them into it with `ear copy-database`.", 500)
        catalog_id = database_id or folder_id or uuid.uuid4().hex
        if row is None:
            Setting.create(key="catalog_id", value=catalog_id)
    if folder_id != catalog_id:
        with replacing(marker) as fh:
            fh.write(catalog_id.encode() + b"\n")


def is_sqlite() -> bool:
    return isinstance(database.obj, SqliteDatabase)


def close_idle() -> None:
    """Close the pool's idle connections (before a fork: a child must not share them)."""
    if hasattr(database.obj, "close_idle"):
        database.obj.close_idle()


def write_transaction():
    """A transaction that writes: on SQLite it takes the write lock at once (IMMEDIATE), so
    that what it read cannot change under it before it writes."""
    return database.atomic("IMMEDIATE") if is_sqlite() else database.atomic()


def _add_new_columns() -> None:
    """A database made by an older ear lacks the columns added since: add them (each new
    field must be nullable or have a default, so that existing rows stay valid)."""
    missing = _missing_columns()
    if missing:
        migrator = SchemaMigrator.from_database(database.obj)
        migrate(*(migrator.add_column(table, field.column_name, field) for table, field in missing))


def _drop_old_indexes() -> None:
    # A content hash was unique in the whole catalog before there were libraries.
    if database.table_exists("track") and any(
            index.name == "track_content_hash" for index in database.get_indexes("track")):
        migrate(SchemaMigrator.from_database(database.obj).drop_index("track", "track_content_hash"))


def _missing_columns() -> list[tuple[str, Field]]:
    missing = []
    for model in MODELS:
        table = model._meta.table_name
        if not database.table_exists(table):
            continue  # create_tables makes it whole
        have = {column.name for column in database.get_columns(table)}
        missing += [(table, f) for f in model._meta.sorted_fields if f.column_name not in have]
    return missing
