"""The catalog: tracks in the database, their landmarks in the hash table and their vectors in the
embedding index, kept in agreement, one library at a time (libraries.py: each has stores of its
own; the database, the originals and the track ids are shared).

Storing writes the landmarks (new segment, manifest renamed into place), then the vectors, then
the tracks in SQLite, under the library's table's writer lock. Removing marks the track removed in
the stores, then deletes the row. After a crash between the steps, `reconcile` (run before every
store, at the service's start, by `ear compact`) finishes the job; readers trust only ids SQLite knows.

A track's audio is an original the catalog keeps (originals.py: an upload, or a file `ear ingest`
copied) or a file the owner linked; an original is deleted with the last track that names it, or
when the upload it came from was no audio; what a crash left is swept after a day. A video's
frames (frames.py) are the track's: stored before its row, removed with it.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .config import Config
from . import jobs, melody_index
from .db import METADATA_FIELDS, Job, Track, database, init_db, pair_with_folder
from .ids import track_ids
from .embed import Model
from .errors import BadAudio, EarError, NotFound
from .libraries import OWNER, Library, OpenLibraries, Rows, names_on_disk
from .segments import pack
from .storage import ensure_writable
from .originals import Originals
from .frames import Frames
from .ingest import OnProgress, PreparedTrack, prepare

log = logging.getLogger(__name__)
Stored = Callable[[list[tuple[Track, bool]]], None]


class Catalog:
    def __init__(self, config: Config) -> None:
        self.config = config
        for folder in (config.data_dir, config.fingerprint_dir, config.embedding_dir):
            ensure_writable(folder)
        init_db(config.database)
        self._open = OpenLibraries(config)
        owner = self.library(OWNER)
        pair_with_folder(config.data_dir / "catalog-id",
                         bool(owner.table.track_ids()) or len(names_on_disk(config)) > 1)
        self.originals = Originals(config.originals_dir)
        self.frames = Frames(config.frames_dir)

    def library(self, name: str = OWNER) -> Library:
        """Library `name`'s stores (libraries.OpenLibraries: opened on demand, a few kept open)."""
        return self._open.get(name)

    def every_library(self) -> list[Library]:
        return self._open.every()

    # ---- writing -----------------------------------------------------------------------------
    def store(self, prepared: list[PreparedTrack], library: str = OWNER,
              then: Stored | None = None) -> list[tuple[Track, bool]]:
        """Store prepared tracks in `library`; (track, True) for new ones, (existing track,
        False) for audio already in it. `then(result)` runs in the transaction that records the
        tracks, so that what it writes (a job's end) and the tracks are committed together."""
        shelf = self.library(library)
        with shelf.table.writing(), database.connection_context():
            self._reconcile(shelf)
            new: list[PreparedTrack] = []
            position: dict[str, int] = {}  # content hash → index in `new`
            plan: list[tuple[Track | None, int, bool]] = []  # (existing, index in new, created)
            for item in prepared:
                existing = Track.get_or_none((Track.content_hash == item.content_hash)
                                             & (Track.library == library))
                if existing is not None:
                    plan.append((existing, -1, False))
                elif item.content_hash in position:  # the same audio twice in one batch
                    plan.append((None, position[item.content_hash], False))
                else:
                    position[item.content_hash] = len(new)
                    plan.append((None, len(new), True))
                    new.append(item)
            ids = track_ids(len(new), self.library(OWNER).table.manifest.next_track_id) if new else []
            if new:
                shelf.table.add({tid: (pack(p.fingerprint.hashes, tid, p.fingerprint.frames),
                                       p.fingerprint.peaks) for tid, p in zip(ids, new)})
                for model in {p.embedding.model for p in new if p.embedding is not None}:
                    if not shelf.index.add({tid: p.embedding.arrays() for tid, p in zip(ids, new)
                                            if p.embedding is not None and p.embedding.model == model}, model):
                        jobs.queue_reindex(library, jobs.REEMBED)  # made while the model changed
                for tid, p in ((t, p) for t, p in zip(ids, new) if p.frames is not None):
                    self.frames.adopt(p.frames, tid)  # before the row: a track found has its frames
            # From the check to the rows that name the originals, under their lock: a removal of
            # the same bytes from another library went before (the file is gone) or waits. After
            # the slow writes, which uploads must not wait for: a refused batch's ids are
            # orphans that the next reconcile drops.
            with self.originals.lock():
                gone = [p.source for p in new if not self._still_kept(p)]
                if gone:  # its track was removed meanwhile, and the same bytes' original with it
                    raise EarError("original_gone", f"The file kept of {gone[0]} was deleted while it "
                                   "was being added (its track was removed): send it again.", 409)
                with database.atomic():
                    for item, (existing, _, _) in zip(prepared, plan):
                        if existing is not None:
                            self._give_audio(existing, item)
                    created = [Track.create(id=tid, library=library, source=p.source, duration=p.duration,
                                            content_hash=p.content_hash, original=p.original,
                                            linked_path=p.linked_path,
                                            **{k: p.metadata.get(k, "") for k in METADATA_FIELDS})
                               for tid, p in zip(ids, new)]
                    melody_index.store({t: p.melody for t, p in zip(ids, new) if p.melody is not None}, library)
                    result = [(existing or created[j], is_new) for existing, j, is_new in plan]
                    if then is not None:
                        then(result)
            for item, (existing, j, is_new) in zip(prepared, plan):
                if not is_new:
                    self._forget_original(item.original)
                    self.frames.give(item.frames, existing.id if existing is not None else None)
        return result

    def queue_upload(self, stream: BinaryIO, suffix: str, label: str, metadata: dict,
                     library: str = OWNER) -> Job:
        """Keep an upload as an original, durably, and queue its ingest into `library` for
        `ear worker`."""
        # Under the originals' lock: a removal of a track with these very bytes must not delete
        # the file between its keeping and its job.
        with self.originals.lock():
            name = self.originals.keep(stream, suffix)
            try:
                return jobs.queue_ingest(name, label, metadata, library)
            except BaseException:
                with database.connection_context():
                    self._forget_original(name, locked=True)
                raise

    def prepare_original(self, name: str, label: str, metadata: dict, model: Model,
                         library: str = OWNER, progress: OnProgress | None = None
                         ) -> PreparedTrack | Track:
        """Analyse a kept original: the track to store, or the Track of `library` that has these
        very bytes already. `progress(seconds)` is told how much audio has been analysed."""
        with database.connection_context():
            existing = Track.get_or_none((Track.original == name) & (Track.library == library))
        if existing is not None:
            return existing
        path = self.originals.path(name)
        if not path.is_file():
            raise EarError("original_gone", f"The file kept of {label} is gone: send it again.", 409)
        prepared = prepare(path, self.config, model, name=label, metadata=metadata, progress=progress)
        return replace(prepared, original=name)

    def prepare_file(self, path: Path, metadata: dict, model: Model, library: str = OWNER,
                     link: bool = False) -> PreparedTrack | Track:
        """A file the owner's shell names, linked where it is or else kept as an original (a
        copy), then analysed as `prepare_original`; a file that cannot be a track leaves
        nothing kept."""
        if link:
            prepared = prepare(path, self.config, model, name=str(path), metadata=metadata)
            return replace(prepared, linked_path=str(path.resolve()))
        try:
            with open(path, "rb") as fh:
                name = self.originals.keep(fh, path.suffix)
        except OSError as exc:
            raise BadAudio("unreadable", f"Cannot read {path}: {exc.strerror}.", 404) from exc
        try:
            prepared = self.prepare_original(name, str(path), metadata, model, library)
        except BaseException:
            self.forget_original(name)
            raise
        return replace(prepared, copied_from=str(path)) if isinstance(prepared, PreparedTrack) else prepared

    def audio_path(self, track: Track) -> Path | None:
        """The file of the track's audio that may be opened (played, re-embedded): its kept
        original, or the file the owner linked; None if it has neither or the file is gone."""
        path = (self.originals.path(track.original) if track.original
                else Path(track.linked_path) if track.linked_path else None)
        return path if path is not None and path.is_file() else None

    def forget_original(self, name: str) -> None:
        """An original kept for a track that was then not stored (bad audio): delete it,
        unless a track (of any library) names it or an unfinished job needs it."""
        with database.connection_context():
            self._forget_original(name)

    def _forget_original(self, name: str, locked: bool = False) -> None:
        if not name:
            return
        with nullcontext() if locked else self.originals.lock():
            if name not in self._originals_in_use(name):
                self.originals.delete(name)

    def _still_kept(self, item: PreparedTrack) -> bool:
        """Is the item's original (if any) there? One that another library's removal of the same
        bytes deleted meanwhile is kept again from the file `ear ingest` copied it from, if that
        file still holds those bytes. Under the originals' lock."""
        if not item.original or self.originals.path(item.original).is_file():
            return True
        if not item.copied_from:  # an upload: its job kept the original from removals
            return False
        try:
            with open(item.copied_from, "rb") as fh:
                return bool(self.originals.keep(fh, Path(item.copied_from).suffix, only_as=item.original))
        except OSError:
            return False

    def _originals_in_use(self, name: str | None = None) -> set[str]:
        # Those that a track names or an unfinished job still needs (all, or just `name`).
        tracks = Track.select(Track.original).where(Track.original != "")
        waiting = Job.select(Job.original).where(Job.status.in_(jobs.UNFINISHED), Job.original != "")
        if name is not None:
            tracks, waiting = tracks.where(Track.original == name), waiting.where(Job.original == name)
        return {o for query in (tracks, waiting) for (o,) in query.tuples()}

    def _give_audio(self, track: Track, item: PreparedTrack) -> None:
        # The same music again: a track that had no audio to open (added before originals were
        # kept) takes this one's, if it is there (under the originals' lock).
        if (not track.original and not track.linked_path and (item.original or item.linked_path)
                and self._still_kept(item)):
            track.original, track.linked_path = item.original, item.linked_path
            track.save(only=[Track.original, Track.linked_path])

    def remove(self, track_id: int, library: str | None = None) -> Track:
        """Remove a track of `library` (None: of whichever library holds it, for the admin)."""
        found = self.library(library).get(track_id) if library else self.get(track_id)
        shelf = self.library(found.library)
        with shelf.table.writing(), database.connection_context():
            track = Track.get_or_none((Track.id == track_id) & (Track.library == found.library))
            if track is None:  # removed meanwhile
                raise NotFound("track_not_found", f"No track with id {track_id}.")
            shelf.table.remove([track_id])
            shelf.index.remove([track_id])
            track.delete_instance()
            self._forget_original(track.original)
            self.frames.remove(track_id)
        return track

    def reconcile(self) -> None:
        for shelf in self.every_library():
            with shelf.table.writing(), database.connection_context():
                self._reconcile(shelf)

    def tidy(self) -> None:
        """What a process killed mid-write left behind, put right: every library's stores
        reconciled with SQLite, and files no manifest names deleted. Waits for no writer: while
        one holds a table's lock, reconciling it is left to the next store, start or `ear compact`."""
        for shelf in self.every_library():
            with shelf.table.writing(wait=False) as table:
                if table is not None:
                    with database.connection_context():
                        try:
                            self._reconcile(shelf)
                        except EarError as exc:  # serve what there is; the owner is told
                            log.error("%s", exc.message)
            shelf.index.sweep()
        with database.connection_context(), self.originals.lock():
            self.originals.sweep(self._originals_in_use())
            self.frames.sweep({tid for (tid,) in Track.select(Track.id).tuples()})
        jobs.prune()

    def _reconcile(self, shelf: Library) -> None:
        # Call with the library's writer lock and a connection held.
        in_table = shelf.table.track_ids()
        in_db = {t.id for t in Track.select(Track.id).where(Track.library == shelf.name)}
        if in_db and not shelf.table.has_manifest:
            # A data folder restored without its fingerprints: the rows are not crash debris.
            raise EarError("fingerprints_missing", f"{shelf.table.directory} has no manifest but "
                           f"the database lists {len(in_db)} tracks of library {shelf.name}: restore "
                           "that folder, or remove the database to start an empty catalog.", 500)
        orphans = sorted(in_table - in_db)  # landmarks stored, row never written (crash)
        if orphans:
            shelf.table.remove(orphans)
            shelf.index.remove(orphans)
        gone = in_db - in_table  # removal began in the table, row not yet deleted (crash)
        if gone:
            shelf.index.remove(sorted(gone))
            Track.delete().where(Track.id.in_(sorted(gone))).execute()

    def compact(self) -> None:
        """Merge each library's table into one segment, dropping removed tracks' landmarks."""
        for shelf in self.every_library():
            with shelf.table.writing():
                shelf.table.merge_all()

    def rebuild_index(self, library: str = OWNER, force: bool = False) -> bool:
        """Fold a library's new and removed tracks into fresh Annoy files (queries go on)."""
        return self.library(library).index.rebuild(force=force)

    def request_rebuild(self, library: str = OWNER) -> None:
        """Have `ear worker` rebuild a library's embedding indexes soon (until then, the vectors
        of new tracks are searched exactly, and removed tracks are skipped)."""
        jobs.queue_reindex(library)

    # ---- reading: every library's tracks (a library's own: `library(name)`) ------------------
    def tracks(self) -> list[Track]:
        return Rows(None).tracks()

    def get(self, track_id: int) -> Track:
        return Rows(None).get(track_id)

    def rows(self, ids: Iterable[int]) -> dict[int, Track]:
        return Rows(None).rows(ids)
