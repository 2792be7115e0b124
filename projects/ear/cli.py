"""The `ear` command: ingest, identify, similar, tracks, remove, compact, reindex, serve, eval, train."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .catalog import Catalog, PreparedTrack, audio_files
from .config import Config, load_config
from .decode import decode
from .embed import configure_threads
from .errors import EarError

_BATCH_TRACKS = 50  # tracks stored per segment when ingesting many files


def _candidate_count(raw: str) -> int:
    """--candidates N: a whole number from 0 to 100 (as `?candidates=` over HTTP)."""
    try:
        n = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if not 0 <= n <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ear", description=__doc__)
    parser.add_argument("--data-dir", help="catalog folder (default: EAR_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add audio files or folders (recursive) to the catalog")
    p.add_argument("paths", nargs="+")
    for name in ("title", "artist", "album", "genre"):
        p.add_argument(f"--{name}", help=f"{name} for every file (default: from its tags)")

    p = sub.add_parser("identify", help="which catalog track is each FILE, and where in it")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--candidates", type=_candidate_count, default=0, metavar="N",
                   help="also list the first N tracks of the ranking, matches or not")

    p = sub.add_parser("similar", help="catalog tracks that sound like each FILE, or like a track")
    p.add_argument("files", nargs="*")
    p.add_argument("--track", type=int, help="tracks like this catalog track instead")
    p.add_argument("-k", type=int, default=None, help="how many (default: EAR_TOP_K)")
    p.add_argument("--artist", default="", help="only tracks by this artist")
    p.add_argument("--genre", default="", help="only tracks of this genre")
    p.add_argument("--exclude-artist", default="", help="no tracks by this artist")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("reindex", help="rebuild the embedding indexes")
    p.add_argument("--reembed", action="store_true",
                   help="embed every track again from its source file (after a model change)")

    sub.add_parser("tracks", help="list the catalog")
    p = sub.add_parser("remove", help="remove tracks from the catalog")
    p.add_argument("ids", nargs="+", type=int)
    sub.add_parser("compact", help="merge the fingerprint store, dropping removed tracks")

    p = sub.add_parser("serve", help="development server (Gunicorn is for production)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)

    p = sub.add_parser("eval", help="benchmark identification on degraded clips of a catalog")
    from .eval import add_arguments
    add_arguments(p)

    p = sub.add_parser("train", help="train the embedding model (resumable)")
    from .train import add_arguments as train_arguments
    train_arguments(p)

    args = parser.parse_args(argv)
    config = load_config(data_dir=args.data_dir)
    if args.command not in ("train", "serve"):  # train has --threads; serve sets them itself
        configure_threads(config.torch_threads, config.torch_interop_threads)
    handler = globals()["cmd_" + args.command]
    try:
        return handler(config, args) or 0
    except EarError as exc:
        print(f"ear: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_train(config: Config, args) -> int:
    from .train import run
    return run(args)


def cmd_ingest(config: Config, args) -> int:
    catalog = Catalog(config)
    metadata = {k: getattr(args, k) for k in ("title", "artist", "album", "genre")}
    files = list(audio_files(args.paths))
    failures = 0
    batch: list[PreparedTrack] = []
    progress = _Progress(len(files))

    def flush() -> None:
        for track, created in catalog.store(batch):
            verb = "added" if created else "exists"
            progress.line(f"{verb}\t{track.id}\t{track.artist or '-'}\t{track.title}\t{track.source}")
        batch.clear()

    for path in files:
        try:
            batch.append(catalog.prepare(path, name=str(path), metadata=metadata))
        except EarError as exc:
            failures += 1
            progress.line(f"skipped\t{path}\t{exc.code}: {exc.message}", err=True)
        progress.step()
        if len(batch) >= _BATCH_TRACKS:
            flush()
    if batch:
        flush()
    progress.done()
    catalog.rebuild_index()
    return 1 if failures and failures == len(files) else 0


def cmd_identify(config: Config, args) -> int:
    catalog = Catalog(config)

    def answer(file: str) -> dict:
        matches, candidates = catalog.identify_with_candidates(_query_samples(config, file),
                                                              args.candidates)
        result = {"matches": [m.to_json() for m in matches]}
        if args.candidates:
            result["candidates"] = [m.to_json() for m in candidates]
        return result

    def describe(file: str, result: dict) -> None:
        if not result["matches"]:
            maybe = ", ".join(f"{c['track']['title']} (#{c['track']['id']}, {c['confidence']:.2f})"
                              for c in result.get("candidates", []))
            print(f"{file}: no match" + (f"; could it be: {maybe}" if maybe else ""))
            return
        best = result["matches"][0]
        t = best["track"]
        print(f"{file}: {t['artist'] or '-'} — {t['title']} (#{t['id']}) at "
              f"{best['offset_s']:.2f} s, confidence {best['confidence']:.2f}")

    _answer_each([(f, lambda f=f: answer(f)) for f in args.files], args.json, describe)
    return 0


def cmd_similar(config: Config, args) -> int:
    if bool(args.files) == (args.track is not None):
        print("ear similar: give FILE(s) or --track ID", file=sys.stderr)
        return 2
    catalog = Catalog(config)
    k = args.k or config.top_k
    filters = {"artist": args.artist, "genre": args.genre, "exclude_artist": args.exclude_artist}

    def like_track() -> dict:
        return {"matches": [s.to_json() for s in catalog.similar_to_track(args.track, k, **filters)]}

    def like_clip(file: str) -> dict:
        identified, found = catalog.similar_to_clip(_query_samples(config, file), k, **filters)
        return {"identified": identified.to_json() if identified else None,
                "matches": [s.to_json() for s in found]}

    def describe(label: str, result: dict) -> None:
        basis = result.get("identified")
        print(f"{label}: like {basis['track']['title']!r}" if basis else f"{label}:")
        for m in result["matches"]:
            t = m["track"]
            print(f"  {m['score']:.3f}  {t['artist'] or '-'} — {t['title']} (#{t['id']})")

    queries = ([(f"track:{args.track}", like_track)] if args.track is not None
               else [(f, lambda f=f: like_clip(f)) for f in args.files])
    _answer_each(queries, args.json, describe)
    return 0


def _query_samples(config: Config, file: str):
    return decode(file, max_seconds=config.max_query_seconds, timeout_s=config.decode_timeout_s)


def _answer_each(queries, as_json: bool, describe) -> None:
    """Answer each (label, compute) in turn; a failing query reports its error, the rest go on.
    With `as_json`, one object per line: {"query": label, ...compute()} or {"query", "error"}."""
    for label, compute in queries:
        result: dict = {"query": label}
        try:
            result.update(compute())
        except EarError as exc:
            result["error"] = exc.to_json()["error"]
        if as_json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{label}: error: {result['error']['message']}")
        else:
            describe(label, result)


def cmd_reindex(config: Config, args) -> int:
    catalog = Catalog(config)
    if args.reembed:
        done, missing = catalog.reembed()
        print(f"embedded {done} tracks again" + (f"; {len(missing)} sources gone (their old "
                                                  f"vectors kept): {missing}" if missing else ""))
    started = time.perf_counter()
    catalog.rebuild_index(force=True)
    print(f"embedding indexes rebuilt: {catalog.index.window_count} windows "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_tracks(config: Config, args) -> int:
    for t in Catalog(config).tracks():
        print(f"{t.id}\t{t.duration:8.1f}s\t{t.artist or '-'}\t{t.title}\t{t.source}")
    return 0


def cmd_remove(config: Config, args) -> int:
    catalog = Catalog(config)
    status = 0
    for track_id in args.ids:
        try:
            track = catalog.remove(track_id)
            print(f"removed\t{track.id}\t{track.title}")
        except EarError as exc:
            print(f"ear: {exc.message}", file=sys.stderr)
            status = 1
    catalog.rebuild_index()
    return status


def cmd_compact(config: Config, args) -> int:
    catalog = Catalog(config)
    catalog.compact()
    print(f"{catalog.table.landmark_count} landmarks in {len(catalog.table.manifest.segments)} segment(s)")
    return 0


def cmd_serve(config: Config, args) -> int:
    from .app import create_app
    app = create_app(config)
    configure_threads(config.torch_threads, config.torch_interop_threads)
    app.run(host=args.host, port=args.port or config.port)
    return 0


def cmd_eval(config: Config, args) -> int:
    from .eval import run
    return run(config, args)


class _Progress:
    """Lines on stdout; on a terminal, a bar on stderr below them."""

    def __init__(self, total: int):
        self.total, self.count, self.started = total, 0, time.monotonic()
        self.show = sys.stderr.isatty() and total > 1

    def line(self, text: str, err: bool = False) -> None:
        if self.show:
            sys.stderr.write("\r\033[K")
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
        self._draw()

    def step(self) -> None:
        self.count += 1
        self._draw()

    def _draw(self) -> None:
        if self.show:
            filled = int(30 * self.count / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total} "
                             f"{time.monotonic() - self.started:.0f}s")
            sys.stderr.flush()

    def done(self) -> None:
        if self.show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
