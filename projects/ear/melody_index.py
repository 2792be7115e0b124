"""A library's melodies, searchable by interval grams: what query by humming looks things up in.

A track's contour (pitch.py) is a few KB, so it lives in the catalog database (db.Melody),
written in the transaction that adds the track and deleted with it: no store of its own to
reconcile after a crash. A process holds a library's melodies in memory, smoothed and cut into
notes (melody.py), with every gram of every track in one array sorted by key, so that a hum's
grams find their places in the library by binary search. `refresh` compares the library's row
count and the sum of the rows' random stamps with what it holds (one small query), and on a
change loads only the tracks it does not hold yet: the web worker sees what `ear worker` added.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import numpy as np
from peewee import fn

from .db import Melody, Track, database
from .melody import Notes, grams, notes, smooth

_LOAD_ROWS = 500  # contours read at a time: SQLite's limit on a query's parameters
_WRITE_ROWS = 200  # rows written at a time: 4 parameters each


@dataclass(frozen=True)
class TrackMelody:
    track_id: int
    contour: np.ndarray  # smoothed, tuning taken out (float16: pitches within 0.06 semitone)
    notes: Notes


@dataclass(frozen=True)
class Generation:
    """A library's melodies as one refresh loaded them, and every gram of them sorted by key."""

    tracks: list[TrackMelody]
    keys: np.ndarray  # int32
    track: np.ndarray  # int32: position in `tracks`
    note: np.ndarray  # int32: the gram's first note
    pitch: np.ndarray  # int16: that note's pitch

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each of `keys` occurs: (position in `keys`, position in this generation's
        arrays `track`, `note`, `pitch`)."""
        lo = np.searchsorted(self.keys, keys, side="left")
        counts = np.searchsorted(self.keys, keys, side="right") - lo
        which = np.repeat(np.arange(keys.size), counts)
        at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        return which, at


def store(contours: dict[int, np.ndarray], library: str) -> None:
    """Write (or rewrite) tracks' contours, in a transaction: the one that adds the tracks, or
    one of its own. Tracks removed meanwhile are skipped: their rows went with them."""
    present = ({i for (i,) in Track.select(Track.id).where(Track.id.in_(list(contours))).tuples()}
               if contours else set())
    rows = [{"track": track_id, "library": library, "contour": c.astype(np.float16).tobytes(),
             "stamp": random.getrandbits(31)} for track_id, c in contours.items() if track_id in present]
    for start in range(0, len(rows), _WRITE_ROWS):
        some = rows[start:start + _WRITE_ROWS]
        Melody.delete().where(Melody.track.in_([r["track"] for r in some])).execute()
        Melody.insert_many(some).execute()


def parse(track_id: int, contour: np.ndarray) -> TrackMelody:
    smoothed = smooth(contour.astype(np.float32))
    return TrackMelody(track_id, smoothed.astype(np.float16), notes(smoothed))


class MelodyIndex:
    """One library's melodies in memory. Thread-safe: a search takes `generation` once and
    sees one whole generation."""

    def __init__(self, library: str) -> None:
        self.library = library
        self.generation = _generation([])
        self._version: tuple[int, int] | None = None
        self._stamps: dict[int, int] = {}
        self._loading = threading.Lock()

    def refresh(self) -> Generation:
        """The library's melodies as the database holds them now."""
        with self._loading, database.connection_context():
            mine = Melody.library == self.library
            count, total = (Melody.select(fn.COUNT(Melody.track), fn.SUM(Melody.stamp))
                            .where(mine).scalar(as_tuple=True))
            version = (int(count or 0), int(total or 0))
            if version == self._version:
                return self.generation
            stamps = dict(Melody.select(Melody.track, Melody.stamp).where(mine).tuples())
            held = {t.track_id: t for t in self.generation.tracks
                    if self._stamps.get(t.track_id) == stamps.get(t.track_id)}
            wanted = [i for i in stamps if i not in held]
            for start in range(0, len(wanted), _LOAD_ROWS):
                for track_id, blob in (Melody.select(Melody.track, Melody.contour)
                                       .where(Melody.track.in_(wanted[start:start + _LOAD_ROWS])).tuples()):
                    held[track_id] = parse(track_id, np.frombuffer(bytes(blob), np.float16))
            self.generation = _generation([held[i] for i in sorted(held) if i in stamps])
            self._stamps, self._version = stamps, version
            return self.generation


def _generation(tracks: list[TrackMelody]) -> Generation:
    per_track = [grams(t.notes) for t in tracks]
    keys = np.concatenate(per_track) if per_track else np.zeros(0, np.int32)
    track = np.concatenate([np.full(k.size, i, np.int32) for i, k in enumerate(per_track)]) if per_track else keys
    note = np.concatenate([np.arange(k.size, dtype=np.int32) for k in per_track]) if per_track else keys
    pitch = np.concatenate([t.notes.pitch[:k.size] for t, k in zip(tracks, per_track)]) if per_track else keys
    order = np.argsort(keys, kind="stable")
    return Generation(tracks, keys[order].astype(np.int32), track[order].astype(np.int32),
                      note[order].astype(np.int32), pitch[order].astype(np.int16))
