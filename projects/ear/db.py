"""The catalog database: peewee models on SQLite (WAL) in the data directory.

One `SqliteDatabase` object, bound to a file by `init_db`. Connections are opened per use and
closed after; a process that forks (Gunicorn's preloaded master) must hold none at fork time,
so `init_db` leaves the connection closed.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from peewee import (AutoField, CharField, DateTimeField, FloatField, Model, SqliteDatabase,
                    TextField)

database = SqliteDatabase(None)


class BaseModel(Model):
    class Meta:
        database = database


class Track(BaseModel):
    # Ids come from the fingerprint store (which never reuses one), not from SQLite.
    id = AutoField()
    title = TextField()
    artist = TextField(default="")
    album = TextField(default="")
    genre = TextField(default="")
    duration = FloatField()
    source = TextField()
    content_hash = CharField(unique=True)
    added_at = DateTimeField(default=lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))

    def to_json(self, brief: bool = False) -> dict:
        data = {"id": self.id, "title": self.title, "artist": self.artist, "source": self.source}
        if not brief:
            data.update(album=self.album, genre=self.genre, duration=round(self.duration, 3),
                        added_at=self.added_at.isoformat() + "Z")
        return data


MODELS = [Track]


def init_db(path: Path) -> None:
    """Bind the models to the SQLite file at `path`, creating tables; leaves no connection open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    database.init(str(path), pragmas={
        "journal_mode": "wal",
        "synchronous": "normal",  # with WAL: durable at checkpoints, never corrupt
        "busy_timeout": 10000,  # the CLI and the service may write at once
        "foreign_keys": 1,
    })
    with database.connection_context():
        database.create_tables(MODELS)
