"""The catalog: tracks in SQLite and their landmarks in the hash table, kept in agreement.

Adding writes the landmarks first (new segment, manifest renamed into place), then records the
tracks in SQLite, all under the table's writer lock. Removing marks the track removed in the
table first, then deletes the row. After a crash between the two steps, `reconcile` (run by
every writer) finishes the job, and readers only ever trust ids that SQLite knows.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .config import Config
from .db import Track, database, init_db
from .decode import SAMPLE_RATE, decode, read_tags
from .errors import NotFound
from .hashes import track_landmarks
from .features import TRACK_PEAKS, peaks
from .hashtable import HashTable, encode_peaks, pack
from .match import Candidate, identify

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac",
                  ".webm", ".mka", ".wma", ".aif", ".aiff", ".xm", ".mod", ".it", ".s3m"}
METADATA_FIELDS = ("title", "artist", "album", "genre")


@dataclass
class PreparedTrack:
    """A decoded, fingerprinted track not yet stored."""

    source: str
    metadata: dict
    duration: float
    content_hash: str
    hashes: np.ndarray
    frames: np.ndarray
    peaks: np.ndarray  # encoded for the hash table


@dataclass
class Match:
    track: Track
    offset_s: float
    score: float
    confidence: float
    other_offsets_s: tuple[float, ...] = ()

    def to_json(self) -> dict:
        data = {"track": self.track.to_json(brief=True), "offset_s": self.offset_s,
                "score": self.score, "confidence": self.confidence}
        if self.other_offsets_s:  # the clip fits equally well there: repeated music
            data["other_offsets_s"] = list(self.other_offsets_s)
        return data


@dataclass
class Catalog:
    config: Config
    table: HashTable = field(init=False)

    def __post_init__(self) -> None:
        init_db(self.config.db_path)
        self.table = HashTable(self.config.fingerprint_dir)

    # ---- adding ------------------------------------------------------------------------------
    def prepare(self, source: bytes | str | os.PathLike, name: str | None = None,
                metadata: dict | None = None) -> PreparedTrack:
        """Decode and fingerprint one track (no lock held: this is the slow part)."""
        samples = decode(source, max_seconds=self.config.max_track_seconds,
                         timeout_s=max(self.config.decode_timeout_s,
                                       self.config.max_track_seconds / 20))
        given = {k: v for k, v in (metadata or {}).items() if k in METADATA_FIELDS and v}
        tags = {} if all(k in given for k in METADATA_FIELDS) else read_tags(source)
        source_name = name or str(source)
        merged = {**tags, **given}
        merged.setdefault("title", Path(source_name).stem or "untitled")
        return prepared_from_samples(samples, source_name, merged,
                                     hashlib.sha256(samples.tobytes()).hexdigest())

    def store(self, prepared: list[PreparedTrack]) -> list[tuple[Track, bool]]:
        """Store prepared tracks; (track, True) for new ones, (existing track, False) for audio
        already in the catalog."""
        with self.table.writing(), database.connection_context():
            self._reconcile()
            new: list[PreparedTrack] = []
            position: dict[str, int] = {}  # content hash → index in `new`
            plan: list[tuple[Track | None, int, bool]] = []  # (existing, index in new, created)
            for item in prepared:
                existing = Track.get_or_none(Track.content_hash == item.content_hash)
                if existing is not None:
                    plan.append((existing, -1, False))
                elif item.content_hash in position:  # the same audio twice in one batch
                    plan.append((None, position[item.content_hash], False))
                else:
                    position[item.content_hash] = len(new)
                    plan.append((None, len(new), True))
                    new.append(item)
            created: list[Track] = []
            if new:
                ids = self.table.allocate_ids(len(new))
                self.table.add({tid: (pack(p.hashes, tid, p.frames), p.peaks)
                                for tid, p in zip(ids, new)})
                with database.atomic():
                    created = [Track.create(id=tid, source=p.source, duration=p.duration,
                                            content_hash=p.content_hash,
                                            **{k: p.metadata.get(k, "") for k in METADATA_FIELDS})
                               for tid, p in zip(ids, new)]
        return [(existing or created[j], is_new) for existing, j, is_new in plan]

    def add(self, source: bytes | str | os.PathLike, name: str | None = None,
            metadata: dict | None = None) -> tuple[Track, bool]:
        return self.store([self.prepare(source, name, metadata)])[0]

    def remove(self, track_id: int) -> Track:
        with self.table.writing(), database.connection_context():
            track = Track.get_or_none(Track.id == track_id)
            if track is None:
                raise NotFound("track_not_found", f"No track with id {track_id}.")
            self.table.remove([track_id])
            track.delete_instance()
        return track

    def compact(self) -> None:
        """Merge the table into one segment, dropping removed tracks' landmarks."""
        with self.table.writing():
            self.table.merge_all()

    def _reconcile(self) -> None:
        # Call with the writer lock and a connection held.
        in_table = self.table.track_ids()
        in_db = {t.id for t in Track.select(Track.id)}
        orphans = sorted(in_table - in_db)  # landmarks stored, row never written (crash)
        if orphans:
            self.table.remove(orphans)
        gone = in_db - in_table  # removal began in the table, row not yet deleted (crash)
        if gone:
            Track.delete().where(Track.id.in_(sorted(gone))).execute()

    def reconcile(self) -> None:
        with self.table.writing(), database.connection_context():
            self._reconcile()

    # ---- reading -----------------------------------------------------------------------------
    def identify(self, samples: np.ndarray) -> list[Match]:
        candidates: list[Candidate] = identify(samples, self.table,
                                               threshold=self.config.match_threshold,
                                               top_k=self.config.top_k)
        if not candidates:
            return []
        with database.connection_context():
            rows = {t.id: t for t in Track.select().where(
                Track.id.in_(sorted({c.track_id for c in candidates})))}
        return [Match(rows[c.track_id], c.offset_s, c.score, c.confidence, c.other_offsets_s)
                for c in candidates if c.track_id in rows]

    def tracks(self) -> list[Track]:
        with database.connection_context():
            return list(Track.select().order_by(Track.id))

    def get(self, track_id: int) -> Track:
        with database.connection_context():
            track = Track.get_or_none(Track.id == track_id)
        if track is None:
            raise NotFound("track_not_found", f"No track with id {track_id}.")
        return track


def prepared_from_samples(samples: np.ndarray, source: str, metadata: dict,
                          content_hash: str) -> PreparedTrack:
    """Fingerprint decoded audio: landmarks and the peaks that verify them."""
    t, f, rank = peaks(samples, TRACK_PEAKS)
    hashes, frames = track_landmarks(t, f, rank)
    return PreparedTrack(source=source, metadata=metadata, duration=samples.size / SAMPLE_RATE,
                         content_hash=content_hash, hashes=hashes, frames=frames,
                         peaks=encode_peaks(t, f))


def audio_files(paths: Iterable[str | os.PathLike]) -> Iterable[Path]:
    """Files named, and audio files found recursively in folders named, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path
