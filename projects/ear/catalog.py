"""The catalog: tracks in SQLite and their landmarks in the hash table, kept in agreement.

Adding writes the landmarks first (new segment, manifest renamed into place), then records the
tracks in SQLite, all under the table's writer lock. Removing marks the track removed in the
table first, then deletes the row. After a crash between the two steps, `reconcile` (run by
every writer) finishes the job, and readers only ever trust ids that SQLite knows.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
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
from . import fusion
from .embed import DIM, STYLE_DIM, Model, shared_model, unit
from .hashtable import HashTable, encode_peaks, pack
from .index import EmbeddingIndex
from .match import best_per_track, rank, verified_candidates

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
    vectors: np.ndarray  # embedding of each 2 s window, one per second
    vector_starts: np.ndarray  # their start times in s
    style: np.ndarray  # what "similar tracks" compares (embed.Model.style_vector)
    embedding_cpu_s: float = 0.0  # CPU time the vectors took (`ear eval` reports the stages)


@dataclass
class Match:
    track: Track
    offset_s: float
    score: float
    confidence: float
    other_offsets_s: tuple[float, ...] = ()
    evidence: tuple[str, ...] = ()  # "fingerprint", "embedding": which of them matched alone
    confirmed: bool = True  # False: a candidate below what ear answers as a match

    def to_json(self) -> dict:
        data = {"track": self.track.to_json(brief=True), "offset_s": self.offset_s,
                "score": self.score, "confidence": self.confidence,
                "evidence": list(self.evidence)}
        if not self.confirmed:
            data["confirmed"] = False
        if self.other_offsets_s:  # the clip fits equally well there: repeated music
            data["other_offsets_s"] = list(self.other_offsets_s)
        return data


@dataclass
class Similar:
    track: Track
    score: float  # cosine similarity of the track vectors, 1 = the same

    def to_json(self) -> dict:
        return {"track": self.track.to_json(brief=True), "score": self.score}


@dataclass
class Identification:
    """Fingerprint-only, embedding-only and fused answers to one query (the eval compares them)."""

    fingerprint: list[tuple[int, float, float]]  # (track, offset s, z), best first, z ≥ threshold
    embedding: list[tuple[int, float, float]]  # (track, offset s, score), best first, all
    candidates: list[fusion.Evidence]  # every track with any evidence, best first
    fused: list[fusion.Evidence]  # the accepted ones: the answer
    clip_vector: np.ndarray | None = None  # the clip's style vector, when it was embedded


@dataclass
class Catalog:
    config: Config
    table: HashTable = field(init=False)
    index: EmbeddingIndex = field(init=False)

    def __post_init__(self) -> None:
        init_db(self.config.db_path)
        self.table = HashTable(self.config.fingerprint_dir)
        self.index = EmbeddingIndex(self.config.embedding_dir, DIM, STYLE_DIM)
        self._rebuild_wanted = threading.Event()
        self._rebuilder: threading.Thread | None = None

    @property
    def model(self) -> Model:
        return shared_model()

    # ---- adding ------------------------------------------------------------------------------
    def prepare(self, source: bytes | str | os.PathLike, name: str | None = None,
                metadata: dict | None = None) -> PreparedTrack:
        """Decode and fingerprint one track (no lock held: this is the slow part)."""
        samples = self._decode_track(source)
        given = {k: v for k, v in (metadata or {}).items() if k in METADATA_FIELDS and v}
        tags = {} if all(k in given for k in METADATA_FIELDS) else read_tags(source)
        source_name = name or str(source)
        merged = {**tags, **given}
        merged.setdefault("title", Path(source_name).stem or "untitled")
        return prepared_from_samples(samples, source_name, merged,
                                     hashlib.sha256(samples.tobytes()).hexdigest(), self.model)

    def _decode_track(self, source: bytes | str | os.PathLike) -> np.ndarray:
        # A catalog track may be hours long: its time limit scales with the length cap.
        return decode(source, max_seconds=self.config.max_track_seconds,
                      timeout_s=max(self.config.decode_timeout_s, self.config.max_track_seconds / 20))

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
                self.index.add({tid: (p.vectors, p.vector_starts, p.style)
                                for tid, p in zip(ids, new) if len(p.vectors)})
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
            self.index.remove([track_id])
            track.delete_instance()
        return track

    def compact(self) -> None:
        """Merge the table into one segment, dropping removed tracks' landmarks."""
        with self.table.writing():
            self.table.merge_all()

    def rebuild_index(self, force: bool = False) -> bool:
        """Fold new and removed tracks into fresh Annoy files (queries go on meanwhile)."""
        return self.index.rebuild(force=force)

    def reembed(self) -> tuple[int, list[int]]:
        """Embed every track again from its source file, then rebuild the indexes with the new
        vectors; (tracks done, ids whose source is gone and keep their old vectors)."""
        replace, missing = {}, []
        for track in self.tracks():
            if not Path(track.source).is_file():
                missing.append(track.id)
                continue
            samples = self._decode_track(track.source)
            vectors, starts, style = self.model.analyse(samples, hop_s=1.0)
            replace[track.id] = (vectors.astype(np.float16), starts, style)
        self.index.rebuild(force=True, replace=replace)
        return len(replace), missing

    def request_rebuild(self) -> None:
        """Rebuild the embedding index soon, in a background thread of this process."""
        self._rebuild_wanted.set()
        if self._rebuilder is None or not self._rebuilder.is_alive():
            self._rebuilder = threading.Thread(target=self._rebuild_loop, name="ear-reindex",
                                               daemon=True)
            self._rebuilder.start()

    def _rebuild_loop(self) -> None:
        while True:
            self._rebuild_wanted.wait()
            self._rebuild_wanted.clear()
            try:
                self.index.rebuild()
            except Exception:  # noqa: BLE001 - pending vectors stay searchable; retry next time
                logging.getLogger(__name__).exception("embedding index rebuild failed")

    def _reconcile(self) -> None:
        # Call with the writer lock and a connection held.
        in_table = self.table.track_ids()
        in_db = {t.id for t in Track.select(Track.id)}
        orphans = sorted(in_table - in_db)  # landmarks stored, row never written (crash)
        if orphans:
            self.table.remove(orphans)
            self.index.remove(orphans)
        gone = in_db - in_table  # removal began in the table, row not yet deleted (crash)
        if gone:
            self.index.remove(sorted(gone))
            Track.delete().where(Track.id.in_(sorted(gone))).execute()

    def reconcile(self) -> None:
        with self.table.writing(), database.connection_context():
            self._reconcile()

    # ---- reading -----------------------------------------------------------------------------
    def identify(self, samples: np.ndarray) -> list[Match]:
        """Matches ranked by fingerprint and embedding evidence together; empty for no match."""
        return self._matches(self.identification(samples).fused[: self.config.top_k])

    def identify_with_candidates(self, samples: np.ndarray, count: int
                                 ) -> tuple[list[Match], list[Match]]:
        """(the matches, the first `count` tracks of the whole ranking): below the matches,
        the ranking goes on with tracks whose evidence is too weak to be an answer (their
        `confirmed` is False) — "could it be …?" rather than "it is"."""
        found = self.identification(samples)
        return (self._matches(found.fused[: self.config.top_k]),
                self._matches(found.candidates[:count]))

    def _matches(self, found: list[fusion.Evidence]) -> list[Match]:
        rows = self._rows(e.track_id for e in found)
        return [Match(rows[e.track_id], e.offset_s, round(e.fused, 2), e.confidence,
                      e.other_offsets_s, tuple(e.kinds), e.accepted)
                for e in found if e.track_id in rows]

    def identification(self, samples: np.ndarray) -> Identification:
        votes: dict[int, tuple[float, float]] = {}
        clip: list[np.ndarray] = []

        def embedding_proposals() -> list[tuple[int, float]]:
            # Only asked for when the landmarks found nothing beyond doubt: it costs ~30 ms.
            found, clip_vector = self._embed_query(samples)
            votes.update(found)
            clip.append(clip_vector)
            return fusion.proposals(votes)

        fingerprint = best_per_track(*verified_candidates(samples, self.table, embedding_proposals))
        known = self._known_ids(set(fingerprint) | set(votes))
        candidates = [e for e in fusion.combine(fingerprint, votes, self.config.match_threshold)
                      if e.track_id in known]
        return Identification(
            fingerprint=[(c.track_id, c.offset_s, c.score) for c in
                         rank(fingerprint, self.config.match_threshold, self.config.top_k)
                         if c.track_id in known],
            embedding=[(t, off, score) for t, (score, off) in
                       sorted(votes.items(), key=lambda kv: -kv[1][0]) if t in known],
            candidates=candidates, fused=[e for e in candidates if e.accepted],
            clip_vector=clip[0] if clip else None)

    def embedding_votes(self, samples: np.ndarray) -> dict[int, tuple[float, float]]:
        """{track: (embedding score, offset in s)} from the clip's windows' nearest neighbours."""
        return self._embed_query(samples)[0]

    def _embed_query(self, samples: np.ndarray) -> tuple[dict[int, tuple[float, float]], np.ndarray]:
        self.index.refresh()
        vectors, starts, style = self.model.analyse(samples, hop_s=fusion.QUERY_HOP_S)
        votes = fusion.embedding_votes(
            self.index.search_windows(vectors, fusion.NEIGHBOURS, fusion.SEARCH_K), starts)
        return votes, style

    # ---- similar tracks ----------------------------------------------------------------------
    def similar_to_track(self, track_id: int, k: int, artist: str = "", genre: str = "",
                         exclude_artist: str = "") -> list[Similar]:
        self.get(track_id)  # 404 for an unknown track
        self.index.refresh()
        vector = self.index.track_vector(track_id)
        if vector is None:
            return []
        return self._nearest(vector, k, {track_id}, artist, genre, exclude_artist)

    def similar_to_clip(self, samples: np.ndarray, k: int, artist: str = "", genre: str = "",
                        exclude_artist: str = "") -> tuple[Match | None, list[Similar]]:
        """(the track the clip was identified as, if confidently; tracks like it). An identified
        clip gets "more like this track"; any other clip gets tracks that sound like the clip."""
        identification = self.identification(samples)
        matches = self._matches(identification.fused[: self.config.top_k])
        if matches and matches[0].confidence >= 0.5:
            return matches[0], self.similar_to_track(matches[0].track.id, k, artist, genre,
                                                     exclude_artist)
        self.index.refresh()
        vector = identification.clip_vector  # embedded already unless landmarks were sure
        if vector is None:
            vector = self.model.clip_vector(samples)
        return None, self._nearest(vector, k, set(), artist, genre, exclude_artist)

    def radio(self, artist: str, k: int, rng: np.random.Generator) -> list[Similar]:
        """A playlist for fans of `artist`: tracks near theirs, by other artists, drawn at random
        from the nearest few times `k` (a different list each time, always relevant)."""
        with database.connection_context():
            own = [t.id for t in Track.select(Track.id).where(Track.artist == artist)]
        if not own:
            raise NotFound("artist_not_found", f"No track by {artist!r} in the catalog.")
        self.index.refresh()
        vectors = [v for v in (self.index.track_vector(t) for t in own) if v is not None]
        if not vectors:
            return []
        pool = self._nearest(unit(np.mean(vectors, axis=0)), 3 * k, set(own), exclude_artist=artist)
        if len(pool) <= k:
            return pool
        weights = np.array([max(s.score, 0.0) + 0.05 for s in pool])
        pick = rng.choice(len(pool), k, replace=False, p=weights / weights.sum())
        return [pool[i] for i in sorted(pick)]

    def _nearest(self, vector: np.ndarray, k: int, exclude_ids: set[int], artist: str = "",
                 genre: str = "", exclude_artist: str = "") -> list[Similar]:
        n = 4 * k + len(exclude_ids) + 10
        while True:  # filters may reject many: widen the search until k pass or all were seen
            ids, sims = self.index.search_tracks(vector, n)
            found = [(int(i), float(sim)) for i, sim in zip(ids, sims) if int(i) not in exclude_ids]
            rows = self._rows(tid for tid, _ in found)  # ids SQLite does not know are left out
            out = [Similar(rows[tid], round(sim, 4)) for tid, sim in found if tid in rows and (
                not artist or rows[tid].artist == artist) and (
                not genre or rows[tid].genre == genre) and (
                not exclude_artist or rows[tid].artist != exclude_artist)]
            if len(out) >= k or len(ids) < n:
                return out[:k]
            n *= 4

    def _rows(self, ids) -> dict[int, Track]:
        ids = sorted(set(ids))
        if not ids:
            return {}
        with database.connection_context():
            return {t.id: t for t in Track.select().where(Track.id.in_(ids))}

    def _known_ids(self, ids: set[int]) -> set[int]:
        """Those of `ids` that SQLite knows (asking for all ids cost 65 ms at 10,000 tracks)."""
        if not ids:
            return set()
        with database.connection_context():
            return {i for (i,) in Track.select(Track.id).where(Track.id.in_(sorted(ids))).tuples()}

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
                          content_hash: str, model: Model | None) -> PreparedTrack:
    """Fingerprint and embed decoded audio: landmarks, the peaks that verify them, vectors
    (none without a model: `ear eval`'s distractors are only fingerprinted)."""
    t, f, peak_rank = peaks(samples, TRACK_PEAKS)
    hashes, frames = track_landmarks(t, f, peak_rank)
    started = time.thread_time()
    if model is None:
        vectors, starts, style = np.zeros((0, DIM), np.float32), np.zeros(0), np.zeros(STYLE_DIM)
    else:
        vectors, starts, style = model.analyse(samples, hop_s=1.0)
    return PreparedTrack(source=source, metadata=metadata, duration=samples.size / SAMPLE_RATE,
                         content_hash=content_hash, hashes=hashes, frames=frames,
                         peaks=encode_peaks(t, f), vectors=vectors.astype(np.float16),
                         vector_starts=starts, style=style, embedding_cpu_s=time.thread_time() - started)


def audio_files(paths: Iterable[str | os.PathLike]) -> Iterable[Path]:
    """Files named, and audio files found recursively in folders named, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path
