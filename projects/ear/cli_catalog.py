"""The `ear` commands that change or list a catalog from the owner's shell: ingest, reindex,
tracks, remove, compact, jobs. `ear ingest` adds tracks here and now, with a progress bar;
uploads over HTTP are jobs that `ear worker` does (standby.py)."""
from __future__ import annotations

import json
import sys
import time

from . import jobs, melody_index
from .catalog import Catalog
from .cli_owner import chosen_library
from .config import Config
from .db import METADATA_FIELDS, Track, database, write_transaction
from .errors import EarError
from .frames import extract
from .ingest import PreparedTrack, audio_files, melodies_again
from .progress import Progress
from .reembed import reembed

_BATCH_TRACKS = 50  # tracks stored per segment when ingesting many files


def cmd_ingest(config: Config, args) -> int:
    catalog = Catalog(config)
    library = chosen_library(catalog, args.library)
    metadata = {k: getattr(args, k) for k in METADATA_FIELDS}
    files = list(audio_files(args.paths))
    failures = 0
    batch: list[PreparedTrack] = []
    progress = Progress(len(files))

    def flush() -> None:
        for track, created in catalog.store(batch, library):
            verb = "added" if created else "exists"
            progress.line(f"{verb}\t{track.id}\t{track.artist or '-'}\t{track.title}\t{track.source}")
        batch.clear()

    for path in files:
        try:
            kept = catalog.prepare_file(path, metadata, catalog.library(library).model(), library, args.link)
            if isinstance(kept, Track):  # these very bytes are a track already
                progress.line(f"exists\t{kept.id}\t{kept.artist or '-'}\t{kept.title}\t{kept.source}")
            else:
                batch.append(kept)
        except EarError as exc:
            failures += 1
            progress.line(f"skipped\t{path}\t{exc.code}: {exc.message}", err=True)
        progress.step()
        if len(batch) >= _BATCH_TRACKS:
            flush()
    if batch:
        flush()
    progress.done()
    catalog.rebuild_index(library)
    return 1 if failures and failures == len(files) else 0


def cmd_reindex(config: Config, args) -> int:
    catalog = Catalog(config)  # without --library: every library (a new model is everyone's)
    for library in ([catalog.library(chosen_library(catalog, args.library))] if args.library
                    else catalog.every_library()):
        started = time.perf_counter()
        if args.reembed:
            progress = Progress(len(library.tracks()))
            embedded, missing = reembed(catalog, library.name, lambda share: progress.step(), every_track=True)
            progress.done()
            print(f"{library.name}: embedded {embedded} tracks again with model {library.model_name()}" + (
                f"; {len(missing)} have no audio file (without vectors of this model, if it is new: "
                f"`ear ingest` their files again): {missing}" if missing else ""))
        else:
            catalog.rebuild_index(library.name, force=True)
        print(f"{library.name}: embedding indexes rebuilt, {library.index.window_count} windows "
              f"in {time.perf_counter() - started:.1f} s")
        if args.melodies:
            found, missing = 0, []
            tracks = library.tracks()
            for start in range(0, len(tracks), _BATCH_TRACKS):  # kept as it goes: hours of audio
                contours, lacking = melodies_again(((t.id, catalog.audio_path(t))
                                                    for t in tracks[start:start + _BATCH_TRACKS]), config)
                with database.connection_context(), write_transaction():
                    melody_index.store(contours, library.name)
                found, missing = found + len(contours), missing + lacking
            print(f"{library.name}: found {found} melodies again" + (
                f"; {len(missing)} tracks have no readable audio file (their old melodies kept): {missing}"
                if missing else ""))
        if args.frames:
            print(f"{library.name}: kept the frames of {_frames_again(catalog, library.tracks())} video "
                  "tracks that had none")
    return 0


def _frames_again(catalog: Catalog, tracks: list[Track]) -> int:
    """Frames for the tracks whose audio file is a video and who have none: how many got them."""
    made = 0
    for track in tracks:
        path = catalog.audio_path(track)
        if path is None or catalog.frames.has(track.id):
            continue
        found = extract(path, catalog.config, track.duration)
        if found is not None:  # None: a file of sound only
            catalog.frames.adopt(found, track.id)
            made += 1
    return made


def cmd_tracks(config: Config, args) -> int:
    catalog = Catalog(config)
    scope = args.library and catalog.library(chosen_library(catalog, args.library))
    for t in scope.tracks() if scope else catalog.tracks():
        print(f"{t.id}\t{t.duration:8.1f}s\t{t.artist or '-'}\t{t.title}\t{t.source}\t{t.library}")
    return 0


def cmd_remove(config: Config, args) -> int:
    catalog = Catalog(config)
    status, changed = 0, set()
    for track_id in args.ids:
        try:
            track = catalog.remove(track_id, args.library and chosen_library(catalog, args.library))
            print(f"removed\t{track.id}\t{track.title}\t{track.library}")
            changed.add(track.library)
        except EarError as exc:
            print(f"ear: {exc.message}", file=sys.stderr)
            status = 1
    for name in sorted(changed):
        catalog.rebuild_index(name)
    return status


def cmd_compact(config: Config, args) -> int:
    catalog = Catalog(config)
    catalog.tidy()
    catalog.compact()
    for name, table in ((shelf.name, shelf.table) for shelf in catalog.every_library()):
        print(f"{name}: {table.landmark_count} landmarks in {len(table.manifest.segments)} segment(s)")
    return 0


def cmd_jobs(config: Config, args) -> int:
    catalog = Catalog(config)  # the database, made or brought up to date
    for job in jobs.recent(args.n, args.library and chosen_library(catalog, args.library)):
        data = {**job.to_json(), "track_id": job.track_id}
        done = f"{data['progress']:.0%}" if job.status == jobs.RUNNING else ""
        what = data.get("error", {}).get("message", "") or (f"track {job.track_id}" if job.track_id else "")
        print(json.dumps(data) if args.json
              else f"{job.id}\t{job.library}\t{job.kind}\t{job.status} {done}\t{job.source or '-'}\t{what}")
    return 0
