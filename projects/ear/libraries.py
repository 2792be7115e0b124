"""Libraries: each owner's tracks, searched apart from everyone else's.

A library is a name (the site owner's is `owner`, a user's is the user's name: users.py), its
own stores in its own folder (landmarks: hashtable.py; vectors: index.py), and the rows of its
tracks and of their melodies (melody_index.py), which carry its name. A query searches one
library's stores only, so what it costs and what it answers depend on that library alone:
another library's tracks can neither take a candidate's place nor slow it down. Track ids are unique across libraries (and random:
ids.py), so an id names one track; a lookup by id in a library that does not hold it answers exactly as one for an
id that no library holds (`track_not_found`, 404).

The owner's stores are where ear kept them before there were users (EAR_DATA_DIR/fingerprints
and /embeddings); another library's are in EAR_DATA_DIR/libraries/NAME/. The reasons for one
store per library, and what 100 of them cost, are in docs/libraries.md.
"""
from __future__ import annotations

import functools
import operator
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

from . import models
from .config import Config
from .db import METADATA_FIELDS, OWNER_LIBRARY, Track, database, write_transaction
from .errors import EarError, NotFound
from .hashtable import HashTable
from .embed import DIM, STYLE_DIM, Model
from .index import EmbeddingIndex
from .melody_index import MelodyIndex
from .segments import MAX_TRACK_ID

OWNER = OWNER_LIBRARY
MAX_METADATA_CHARS = 500  # a title, an artist: a line of text, not a document
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # a folder name and a URL word as it is


def check_name(name: str) -> str:
    """`name` if it may name a library (and so a user); else the error `bad_name`."""
    if not _NAME.fullmatch(name):
        raise EarError("bad_name", f"{name!r} cannot name a library: use 1 to 32 lowercase "
                       "letters, digits, '-' or '_', starting with a letter or digit.")
    return name


def folder(config: Config, name: str) -> Path:
    """Where library `name`'s stores are."""
    return config.data_dir if name == OWNER else config.data_dir / "libraries" / check_name(name)


def names_on_disk(config: Config) -> list[str]:
    """The libraries that have stores: the owner's, and every user's that was ever written."""
    others = config.data_dir / "libraries"
    found = sorted(p.name for p in others.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)) \
        if others.is_dir() else []
    return [OWNER, *(n for n in found if n != OWNER)]


def _is_line(value: object) -> bool:
    """Text a database stores as given: no NUL (PostgreSQL refuses it), no lone surrogate
    (UTF-8 cannot hold it), no line breaks, not too long."""
    if not isinstance(value, str) or len(value) > MAX_METADATA_CHARS or any(c in value for c in "\x00\r\n"):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Rows:
    """The database's rows of one library's tracks (`library`), or of every library's (None: the
    admin's view). Only these rows are trusted: see catalog.py."""

    def __init__(self, library: str | None) -> None:
        self.name = library

    def _mine(self):
        return (Track.library == self.name) if self.name is not None else (Track.id > 0)

    def tracks(self) -> list[Track]:
        with database.connection_context():
            return list(Track.select().where(self._mine()).order_by(Track.added_at, Track.id))

    def find(self, search: str, page: int, per_page: int) -> tuple[int, list[Track]]:
        """(how many tracks have `search` in a title, artist, album, genre or file name, case
        aside; the `page`th `per_page` of them, the newest first), asked of the database: a
        page of a large catalog costs a page."""
        found = self._mine()
        if search:
            found &= functools.reduce(operator.or_, (getattr(Track, name).contains(search)
                                                     for name in (*METADATA_FIELDS, "source")))
        with database.connection_context():
            query = Track.select().where(found)
            return query.count(), list(query.order_by(Track.added_at.desc(), Track.id.desc())
                                       .paginate(page, per_page))

    def track_count(self) -> int:
        with database.connection_context():
            return Track.select().where(self._mine()).count()

    def get(self, track_id: int) -> Track:
        """The track, or `track_not_found` (404) if these rows do not hold it, whether or not
        another library does: the same query and the same answer either way."""
        with database.connection_context():
            track = (Track.get_or_none((Track.id == track_id) & self._mine())
                     if 0 < track_id <= MAX_TRACK_ID else None)
        if track is None:
            raise NotFound("track_not_found", f"No track with id {track_id}.")
        return track

    def describe(self, track_id: int, changes: dict[str, str]) -> Track:
        """Set what the owner says of a track (of METADATA_FIELDS; a title is never empty):
        the track as it is now, or `bad_metadata` saying what is wrong."""
        if set(changes) - set(METADATA_FIELDS) or not all(map(_is_line, changes.values())):
            raise EarError("bad_metadata", f"Send a line of text (at most {MAX_METADATA_CHARS} "
                           f"characters) for any of {', '.join(METADATA_FIELDS)}.")
        changes = {name: value.strip() for name, value in changes.items()}
        if changes.get("title", "x") == "":
            raise EarError("bad_metadata", "A track's title cannot be empty.")
        with database.connection_context(), write_transaction():
            self.get(track_id)
            if changes:
                Track.update(**changes).where(Track.id == track_id).execute()
        return self.get(track_id)

    def rows(self, ids: Iterable[int]) -> dict[int, Track]:
        """{id: track} of those of `ids` that are here."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        with database.connection_context():
            return {t.id: t for t in Track.select().where(Track.id.in_(ids) & self._mine())}

    def known_ids(self, ids: Iterable[int]) -> set[int]:
        """Those of `ids` that are here; asks about these ids only, since asking for every id
        costs tens of ms a query in a large library."""
        ids = sorted(set(ids))
        if not ids:
            return set()
        with database.connection_context():
            return {i for (i,) in Track.select(Track.id).where(Track.id.in_(ids) & self._mine()).tuples()}

    def ids_by_artist(self, artist: str) -> list[int]:
        with database.connection_context():
            return [t.id for t in Track.select(Track.id).where((Track.artist == artist) & self._mine())]


class Library(Rows):
    """One library's stores, and its rows in the database."""

    def __init__(self, config: Config, name: str) -> None:
        super().__init__(name)
        self.config = config
        home = folder(config, name)
        fingerprints = config.fingerprint_dir if name == OWNER else home / "fingerprints"
        embeddings = config.embedding_dir if name == OWNER else home / "embeddings"
        self.table = HashTable(fingerprints)
        self.index = EmbeddingIndex(embeddings, DIM, STYLE_DIM)
        self.melodies = MelodyIndex(name)  # loaded at its first hum

    def model(self) -> Model:
        """The model whose vectors the index holds (models.py; an empty index: the serving
        one): queries and new tracks are embedded with it."""
        return models.for_index(self.config, self.model_name())

    def model_name(self) -> str:
        """The version `model` is (without loading it), from the index's newest generation."""
        self.index.refresh()
        return self.index.model or models.serving(self.config)


class OpenLibraries:
    """The libraries a process has open: the last EAR_OPEN_LIBRARIES used. Another is opened
    when a request needs it (a few ms: its manifests and the fences of its key files); the
    least recently used beyond the limit is let go (its maps close when no request holds it),
    so that memory does not grow with the number of libraries. Thread-safe."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._open: OrderedDict[str, Library] = OrderedDict()  # the most recently used last
        self._lock = threading.Lock()

    def get(self, name: str) -> Library:
        with self._lock:
            if name not in self._open:
                self._open[name] = Library(self.config, name)
                while len(self._open) > max(1, self.config.open_libraries):
                    self._open.popitem(last=False)
            self._open.move_to_end(name)
            return self._open[name]

    def every(self) -> list[Library]:
        """Every library with stores; those not open are opened for the moment, not kept (a
        process that tidies at its start, Gunicorn's master, should not hold them all)."""
        with self._lock:
            kept = dict(self._open)
        return [kept.get(name) or Library(self.config, name) for name in names_on_disk(self.config)]
