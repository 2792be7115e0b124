"""`ear speed`: where ingest's and a query's CPU goes, beside FFmpeg's own decode of the same
audio in the same run.

Ingest: every file of `--catalog` is analysed as `ear ingest` analyses it (ingest.prepare, not
stored); FFmpeg's CPU is that of its processes (the floor: ear must decode), ear's is this
process's. Queries: the clips (10 s by default) of an `ear eval` work folder, identified against
its catalog as /identify does, per degradation level; FFmpeg's decode of each clip beside the
rest. CPU is user + system time, one thread; stages are measured by cProfile with a CPU clock
(its own overhead lands in "the rest"). Each figure is the median of `--runs` runs, with the min
and max.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import pstats
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..catalog import Catalog
from ..config import Config, load_config
from ..decode import decode_query
from ..models import shipped_model
from ..identify import identification
from ..ingest import audio_files, prepare
from ..runtime import configure_threads

# (stage, the functions whose CPU it is, as module.qualified_name): each function's time includes
# what it calls, so no stage's function calls another's. "a|b": a, or b where this checkout has
# no a; a function it lacks is skipped, so that the same file measures an older ear. The STFT is
# counted where it is made: its own stage once it is shared, inside the peaks and log-mel before.
INGEST_STAGES = (
    ("STFT (shared)", "features.power_spectrum"),
    ("peaks", "features._block_peaks"),
    ("landmarks", "hashes.TrackLandmarks.add", "hashes.TrackLandmarks.result"),
    ("log-mel", "embed.LogMel.from_power|embed.LogMel.forward"),
    ("embedding network", "embed.Embedder.forward_with_texture"),
    ("melody: salience", "pitch._salience"),
    ("melody: best candidate", "pitch._best"),
    ("heap trim", "runtime.trim_heap"),
)
QUERY_STAGES = (
    ("STFT", "features.power_spectrum"),
    ("peaks", "features._block_peaks"),
    ("landmarks + lookup + vote", "hashes.landmarks", "hashtable.HashTable.lookup", "match.vote"),
    ("verify + scan", "verify.QueryGrid.verify", "verify.QueryGrid.scan"),
    ("log-mel", "embed.LogMel.from_power|embed.LogMel.forward"),
    ("embedding network", "embed.Embedder.forward_with_texture"),
    ("Annoy search", "index.EmbeddingIndex.search_windows"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="folder of audio to analyse as ingest does (repeatable)")
    parser.add_argument("--eval-work", metavar="DIR",
                        help="an `ear eval` work folder: its catalog and clips for the queries")
    parser.add_argument("--levels", default="CLEAN,SOFT,HARD,ULTRA")
    parser.add_argument("--clips", type=int, default=50, help="clips per level")
    parser.add_argument("--length", type=float, default=10.0, help="of the clips, in seconds")
    parser.add_argument("--runs", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    config = load_config()
    configure_threads(1, 1)
    if args.catalog:
        files = list(audio_files(args.catalog))
        runs = [_ingest_run(files, config) for _ in range(args.runs)]
        print(f"ingest of {len(files)} files, {runs[0]['audio_s'] / 3600:.2f} h, {args.runs} runs "
              "(CPU s; × real time per CPU s)")
        print(_table(runs, _ingest_run(files, config, profiled=True),
                     [("FFmpeg decode (the floor)", "ffmpeg"), ("ear in all", "total")],
                     INGEST_STAGES, scale=lambda r: 1.0, speed=True))
    if args.eval_work:
        work = Path(args.eval_work)
        catalog = Catalog(replace(config, data_dir=work / "catalog"))
        queries = json.loads((work / "queries" / "queries.json").read_text())["queries"]
        for level in args.levels.split(","):
            chosen = [q for q in queries if q["level"] == level and q["length_s"] == args.length][:args.clips]
            files = [str(work / "queries" / Path(q["file"]).name) for q in chosen]
            if not files:
                print(f"\n{level}: no clips of {args.length:g} s in {work / 'queries'}")
                continue
            runs = [_query_run(files, catalog) for _ in range(args.runs)]
            print(f"\n{level}: {len(files)} clips of {args.length:g} s, {args.runs} runs "
                  "(ms of CPU per clip)")
            print(_table(runs, _query_run(files, catalog, profiled=True),
                         [("FFmpeg decode", "ffmpeg"), ("ear beyond FFmpeg", "beyond")],
                         QUERY_STAGES, scale=lambda r: 1000.0 / r["n"], speed=False))
    return 0


def _cpu() -> tuple[float, float]:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _measured(work: Callable[[], None], profiled: bool) -> dict:
    """CPU of this process and of its children while `work` runs; with `profiled`, cProfile's
    stats too (its overhead, large on many small calls, then inflates `own`)."""
    profile = cProfile.Profile(time.process_time) if profiled else None
    own0, children0 = _cpu()
    if profile is not None:
        profile.runcall(work)
    else:
        work()
    own1, children1 = _cpu()
    return {"own": own1 - own0, "ffmpeg": children1 - children0,
            "stats": pstats.Stats(profile).stats if profile else {}}


def _ingest_run(files: list[Path], config: Config, profiled: bool = False) -> dict:
    model, audio = shipped_model(), []

    def work() -> None:
        for path in files:
            audio.append(prepare(path, config, model).duration)
    result = _measured(work, profiled)
    return {**result, "audio_s": sum(audio), "total": result["own"] + result["ffmpeg"]}


def _query_run(files: list[str], catalog: Catalog, profiled: bool = False) -> dict:
    library = catalog.library()
    identification(library, decode_query(files[0], catalog.config))  # pages and caches warm

    def work() -> None:
        for path in files:
            identification(library, decode_query(path, catalog.config))
    result = _measured(work, profiled)
    return {**result, "n": len(files), "beyond": result["own"]}


def _stage_seconds(stats: dict, functions: tuple[str, ...]) -> float:
    keys = set()
    for choices in functions:
        for dotted in choices.split("|"):
            module, *path = dotted.split(".")
            found = importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.{module}")
            for name in path:
                found = getattr(found, name, None)
            if found is not None:
                code = found.__code__
                keys.add((code.co_filename, code.co_firstlineno, code.co_name))
                break
    return sum(stats[key][3] for key in keys if key in stats)  # cumulative time


def _table(runs: list[dict], profiled: dict, rows: list[tuple[str, str]], stages: tuple,
           scale: Callable[[dict], float], speed: bool) -> str:
    """Rows of whole figures over `runs` (median, min, max; × real time with `speed`), then
    each stage's share of the profiled run's own CPU, and that share of the median."""
    lines = [f"{'':28} {'median':>9} {'min':>9} {'max':>9}" + (f" {'× real time':>12}" if speed else "")]
    audio = float(np.median([r.get("audio_s", 0.0) for r in runs]))
    for label, key in rows:
        values = [r[key] * scale(r) for r in runs]
        median = float(np.median(values))
        line = f"{label:28} {median:9.2f} {min(values):9.2f} {max(values):9.2f}"
        lines.append(line + (f" {audio / median:11.0f}×" if speed and median else ""))
    own = float(np.median([r["own"] * scale(r) for r in runs]))
    lines.append(f"ear's own CPU by stage (shares of a profiled run, times the median {own:.2f}):")
    shares = {label: _stage_seconds(profiled["stats"], tuple(functions)) / profiled["own"]
              for label, *functions in stages}
    shares["decode's reading, the rest"] = 1.0 - sum(shares.values())
    lines += [f"  {label:26} {share * own:9.2f} {share:9.0%}" for label, share in shares.items()]
    return "\n".join(lines)
