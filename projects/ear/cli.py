"""The `ear` command: ingest, identify, similar, hum, tracks, remove, compact, reindex, worker, jobs,
users, stats, models, copy-database, serve, eval, train, ingest-memory, busy, libraries, speed.

This module parses; each command's code is imported when it runs (_COMMAND_MODULES), so that
`ear worker`'s waiting process (standby.py) loads no torch."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from .config import Config, load_config
from .db import METADATA_FIELDS
from .errors import EarError
from .params import count_argument

_COMMAND_MODULES = {
    **dict.fromkeys(("ingest", "reindex", "tracks", "remove", "compact", "jobs"), "cli_catalog"),
    **dict.fromkeys(("identify", "similar", "hum"), "cli_queries"),
    **dict.fromkeys(("users", "stats", "models", "copy-database"), "cli_owner")}
MAX_DAYS = 3650  # ten years: far past any log's days (EAR_LOG_DAYS), and a date Python can hold
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
    _catalog_commands(sub)
    _query_commands(sub)
    p = sub.add_parser("worker", help="do the queued jobs (uploads, index rebuilds): Supervisor runs it")
    p.add_argument("--until-idle", action="store_true", help="stop when the queue is empty")
    _owner_commands(sub)

    p = sub.add_parser("serve", help="development server (Gunicorn is for production)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)

    for name, help_text in _LAB_COMMANDS.items():  # options: `ear NAME --help`
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _catalog_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="add audio files or folders (recursive) to the catalog")
    p.add_argument("paths", nargs="+")
    p.add_argument("--link", action="store_true",
                   help="keep only each file's path (played and re-embedded from there) instead "
                        "of a copy in the data folder")
    for name in METADATA_FIELDS:
        p.add_argument(f"--{name}", help=f"{name} for every file (default: from its tags)")

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

    p = sub.add_parser("jobs", help="the newest jobs, their state and what came of them")
    p.add_argument("-n", type=count_argument, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _query_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identify", help="which catalog track is each FILE, and where in it")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--candidates", type=count_argument, default=0, metavar="N",
                   help="also list the first N tracks of the ranking, matches or not")
    p.add_argument("--frames", metavar="DIR", type=Path,
                   help="write the video frame of each best match's moment as DIR/<FILE's name>.jpg")
    p.add_argument("--explain", metavar="DIR", type=Path,
                   help="write why each best match matched, as a picture: DIR/<FILE's name>.svg")
    _log_argument(p)

    p = sub.add_parser("similar", help="catalog tracks that sound like each FILE, or like a track")
    p.add_argument("files", nargs="*")
    p.add_argument("--track", type=int, help="tracks like this catalog track instead")
    p.add_argument("-k", type=int, default=None, help="how many (default: EAR_TOP_K)")
    p.add_argument("--artist", default="", help="only tracks by this artist")
    p.add_argument("--genre", default="", help="only tracks of this genre")
    p.add_argument("--exclude-artist", default="", help="no tracks by this artist")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _log_argument(p)

    p = sub.add_parser("hum", help="which catalog tracks carry the melody hummed or sung in each FILE")
    p.add_argument("files", nargs="+")
    p.add_argument("-k", type=int, default=None, help="how many tracks at most (default: EAR_TOP_K)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--explain", metavar="DIR", type=Path,
                   help="write the hum over the best match's melody, as a picture: DIR/<FILE's name>.svg")
    _log_argument(p)


def _log_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", action="store_true", help="log each query as the service logs its own "
                   "(what `ear stats` counts; never the audio unless EAR_KEEP_QUERIES)")


def _owner_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="the people who may upload to and search their own library")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("add", help="add a user and print their key (shown this once)")
    q.add_argument("name", help="also their library's name: lowercase letters, digits, - and _")
    q = actions.add_parser("list", help="the users, and whether their key still opens")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = actions.add_parser("revoke", help="close a user's key for good (their tracks stay)")
    q.add_argument("name")

    p = sub.add_parser("stats", help="how ear is doing: queries, answered share, latency, feedback")
    p.add_argument("--days", type=_days, default=30, help="over the last N days (default 30)")
    p.add_argument("--json", action="store_true", help="the figures as one JSON object")

    p = sub.add_parser("models", help="the embedding model's versions, their figures, which one serves")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    actions = p.add_subparsers(dest="action")
    q = actions.add_parser("use", help="serve version V (e.g. to roll back): every library is "
                                       "embedded again by `ear worker`, and its queries follow")
    q.add_argument("version", help="as `ear models` lists it: shipped, v1, v2, ...")

    p = sub.add_parser("copy-database", help="copy the catalog's database into an empty one at URL "
                                             "(then set EAR_DATABASE_URL to it)")
    p.add_argument("url", help="e.g. postgresql://ear:PASSWORD@localhost/ear")


def _days(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_DAYS):
        raise argparse.ArgumentTypeError(f"must be a whole number of days from 1 to {MAX_DAYS}")
    return int(raw)


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
            from .runtime import configure_threads
            configure_threads(config.torch_threads, config.torch_interop_threads)
        module = _COMMAND_MODULES.get(args.command)
        commands = importlib.import_module(f".{module}", __package__) if module else sys.modules[__name__]
        return getattr(commands, "cmd_" + args.command.replace("-", "_"))(config, args) or 0
    except EarError as exc:
        print(f"ear: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_worker(config: Config, args) -> int:
    from .standby import Standby
    os.nice(max(0, config.worker_nice))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    standby = Standby(config)
    standby.stop_on_signals()
    standby.run(until_idle=args.until_idle)
    return 0


def cmd_serve(config: Config, args) -> int:
    from .app import create_app
    from .runtime import configure_threads
    app = create_app(config)
    configure_threads(config.torch_threads, config.torch_interop_threads)
    app.run(host=args.host, port=args.port or config.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
