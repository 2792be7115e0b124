"""The `ear` command: ingest, identify, similar, hum, tracks, remove, compact, reindex, worker, jobs,
users, stats, copy-database, serve, eval, train, ingest-memory, busy, libraries, speed."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from . import jobs, melody_index
from .catalog import Catalog
from .cli_owner import (add_owner_commands, chosen_library, cmd_copy_database, cmd_models,  # noqa: F401
                        cmd_stats, cmd_users)
from .cli_queries import add_query_commands, cmd_hum, cmd_identify, cmd_similar  # noqa: F401
from .config import Config, load_config
from .db import METADATA_FIELDS, Track, database, write_transaction
from .errors import EarError
from .frames import extract
from .ingest import PreparedTrack, audio_files, melodies_again
from .params import count_argument
from .progress import Progress
from .reembed import reembed
from .runtime import configure_threads, in_a_child
from .worker import Worker

_BATCH_TRACKS = 50  # tracks stored per segment when ingesting many files
# Measuring and training tools: options their own, imported only when run (never by the service).
_LAB_COMMANDS = {"eval": "benchmark identification on degraded clips of a catalog (--hum: humming, "
                         "--listen: growing prefixes)",
                 "train": "train the embedding model (resumable)",
                 "ingest-memory": "measure the memory of adding tracks (command and service)",
                 "busy": "identify latency while ear worker adds a bulk upload",
                 "libraries": "memory and latency with many users' libraries",
                 "speed": "CPU of ingest and queries by stage, beside FFmpeg's decode"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ear", description=__doc__)
    parser.add_argument("--data-dir", help="catalog folder (default: EAR_DATA_DIR or ./data)")
    parser.add_argument("--library", metavar="NAME", help="a user's library (`ear users`), not the owner's; "
                        "for tracks, remove, jobs, reindex, stats: only it (default: every library)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add audio files or folders (recursive) to the catalog")
    p.add_argument("paths", nargs="+")
    p.add_argument("--link", action="store_true",
                   help="keep only each file's path (played and re-embedded from there) instead "
                        "of a copy in the data folder")
    for name in METADATA_FIELDS:
        p.add_argument(f"--{name}", help=f"{name} for every file (default: from its tags)")

    add_query_commands(sub)

    p = sub.add_parser("reindex", help="rebuild the embedding indexes")
    p.add_argument("--reembed", action="store_true",
                   help="embed every track again from its audio file (after a model change)")
    p.add_argument("--melodies", action="store_true",
                   help="find every track's melody again from its audio file (after a change of method)")
    p.add_argument("--frames", action="store_true",
                   help="keep the pictures of video tracks that have none (added before ear kept them)")

    sub.add_parser("tracks", help="list the catalog")
    p = sub.add_parser("remove", help="remove tracks from the catalog")
    p.add_argument("ids", nargs="+", type=int)
    sub.add_parser("compact", help="merge the fingerprint stores, dropping removed tracks and leftovers")

    p = sub.add_parser("worker", help="do the queued jobs (uploads, index rebuilds): Supervisor runs it")
    p.add_argument("--until-idle", action="store_true", help="stop when the queue is empty")
    p = sub.add_parser("jobs", help="the newest jobs, their state and what came of them")
    p.add_argument("-n", type=count_argument, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_owner_commands(sub)

    p = sub.add_parser("serve", help="development server (Gunicorn is for production)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)

    for name, help_text in _LAB_COMMANDS.items():  # options: `ear NAME --help`
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    if rest and args.command not in _LAB_COMMANDS:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command in _LAB_COMMANDS:
            from .lab import main as lab
            return lab.run(args.command, rest, args.data_dir)
        config = load_config(data_dir=args.data_dir)
        if args.command not in ("serve", "worker"):  # they set their own
            configure_threads(config.torch_threads, config.torch_interop_threads)
        return globals()["cmd_" + args.command.replace("-", "_")](config, args) or 0
    except EarError as exc:
        print(f"ear: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


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


def cmd_worker(config: Config, args) -> int:
    os.nice(max(0, config.worker_nice))
    configure_threads(config.worker_torch_threads, config.torch_interop_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    in_a_child((catalog := Catalog(config)).tidy)
    worker = Worker(catalog, config.worker_name)
    worker.stop_on_signals()
    logging.info("ear worker %s stops after %d jobs", worker.name, worker.run(until_idle=args.until_idle))
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


def cmd_serve(config: Config, args) -> int:
    from .app import create_app
    app = create_app(config)
    configure_threads(config.torch_threads, config.torch_interop_threads)
    app.run(host=args.host, port=args.port or config.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
