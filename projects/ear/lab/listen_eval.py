"""`ear eval --listen`: an answer while still listening (issue 16). The widget uploads what it has
heard so far every `--every` seconds and stops at the first match (`first_match`); how soon
is that, and how often is it wrong?

Contract. Renders, per level, one `--record-s` recording of each catalog track
(`--clips-per-track`) and `--unknown-clips` of music not in the catalog, through the same room,
noise and Opus chain as `ear eval` (lab/clips.py, lab/degrade.py; cached in the work folder's
`listen-queries/` and `listen-unknown/`). Each recording is decoded once as a query is
(`decode_query`, 16 kHz) and cut in samples into prefixes: the widget's (`--every`, 2×`--every`,
... up to `--record-s`) and the short clips of `--lengths`. A prefix below the decoder's minimum
length or silence threshold is refused, as /identify would refuse it: no answer. Every prefix is
identified as /identify does (`identification`; its matches are ear's own decision: a match or
none). Results go to `listen-results.json`; two tables are printed: short clips (right and wrong
first answers, catalog and unknown) and growing prefixes (right by each prefix, median seconds
to a right first match, never answered, first match wrong, unknown recordings ever matched).
The catalog is ingested from `--catalog` unless the work folder already holds it (`ear eval`'s).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..catalog import Catalog
from ..config import Config
from ..decode import MIN_SECONDS, SAMPLE_RATE, SILENCE_RMS, decode_query
from ..errors import EarError
from ..identify import identification
from ..progress import Progress
from . import bench_catalog, clips
from .eval import add_benchmark_arguments
from .degrade import LEVELS, Level, noise_bank

_LISTED = 12  # wrong first answers listed by name, at most


def add_arguments(p) -> None:
    p.add_argument("--listen", action="store_true", required=True)
    add_benchmark_arguments(p, "2,3,4,6")  # the short clips: prefixes of the recordings
    p.add_argument("--every", type=float, default=1.5, help="seconds between the widget's uploads")
    p.add_argument("--record-s", type=float, default=9.0, help="length of each recording")


def run(config: Config, args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(replace(config, data_dir=work / "catalog"))
    bench_catalog.ingest(catalog, args.catalog, work / "ingest.json")
    catalog.rebuild_index()
    levels = [LEVELS[name.strip().upper()] for name in args.levels.split(",")]
    lengths = [float(x) for x in args.lengths.split(",")]
    steps = widget_prefixes(args.every, args.record_s)
    noise = noise_bank(work / "noise", args.seed)
    real = bench_catalog.real_tracks(catalog)
    recordings = clips.catalog_clips(work / "listen-queries", real, levels, [args.record_s],
                                     args.clips_per_track, args.seed, noise)
    recordings += clips.unknown_clips(work / "listen-unknown", args.unknown, levels,
                                      args.unknown_clips, args.seed, noise, (args.record_s,))
    started = time.perf_counter()
    results = listen_all(catalog, recordings, sorted(set(lengths) | set(steps)))
    (work / "listen-results.json").write_text(json.dumps(results))
    print(f"{len(results)} recordings of {args.record_s:g} s, each decoded once and cut in samples "
          f"(16 kHz) into prefixes; identified in {time.perf_counter() - started:.0f} s")
    print("short clips (prefixes of the recordings): right: the first match is the track; wrong: "
          "it names another track; none: no match; unk FP: unknown clips given a match; all wrong: "
          "wrong + unk FP over catalog and unknown clips together")
    print(short_table(results, levels, lengths))
    print(f"growing prefixes (an upload every {args.every:g} s, stopping at the first match): ≤N s: "
          "the answer came by then and names the track; median, p90: seconds heard until a right "
          "answer (those recordings only); never: no match; 1st wrong: the answer named "
          "another track; unk any: unknown recordings given an answer")
    print(listen_table(results, levels, steps))
    print(wrong_first(results, steps))
    return 0


def widget_prefixes(every: float, record_s: float) -> list[float]:
    """The lengths the widget uploads: every `every` seconds, up to `record_s`."""
    return [round(every * k, 3) for k in range(1, int(record_s / every + 1e-6) + 1)]


def listen_all(catalog: Catalog, recordings: list[dict], cuts: list[float]) -> list[dict]:
    """Each recording with, per prefix length (its key: seconds as text), what ear answered."""
    library, results = catalog.library(), []
    bar = Progress(len(recordings))
    for rec in recordings:
        try:
            samples = decode_query(rec["file"], catalog.config)
        except EarError as exc:
            samples = np.zeros(0, np.float32)
            rec = {**rec, "error": exc.message}
        answers = {}
        for seconds in cuts:
            part = samples[: int(round(seconds * SAMPLE_RATE))]
            if part.size < MIN_SECONDS * SAMPLE_RATE or np.sqrt(np.mean(np.square(part))) < SILENCE_RMS:
                answers[f"{seconds:g}"] = {"track_id": None, "refused": True, "ms": None}
                continue
            started = time.perf_counter()
            matches = identification(library, part).matches
            ms = (time.perf_counter() - started) * 1000
            answers[f"{seconds:g}"] = {
                "track_id": matches[0].track_id if matches else None, "ms": ms,
                "confidence": matches[0].confidence if matches else None,
                "offset_s": matches[0].offset_s if matches else None}
        results.append({**rec, "samples": int(samples.size), "answers": answers})
        bar.step()
    bar.done()
    return results


def first_match(result: dict, steps: list[float]) -> tuple[float, dict] | None:
    """(seconds, answer) of the match the widget stops at, over the prefixes `steps`; None:
    never. Its rule (static/widget.js): the first upload that matched."""
    for seconds in steps:
        answer = result["answers"][f"{seconds:g}"]
        if answer["track_id"] is not None:
            return seconds, answer
    return None


def short_table(results: list[dict], levels: list[Level], lengths: list[float]) -> str:
    """Per level and clip length: catalog clips right and wrong, unknown clips matched, latency."""
    lines = [f"{'level':6} {'len':>4} {'n':>4} {'right':>6} {'wrong':>6} {'none':>6} "
             f"{'unk n':>6} {'unk FP':>7} {'all wrong':>9} {'p50 ms':>7} {'p95 ms':>7}"]
    for level in levels:
        for length in lengths + [None]:
            cut = lengths if length is None else [length]
            rows = [(r, r["answers"][f"{s:g}"]) for r in results if r["level"] == level.name for s in cut]
            known = [(r, a) for r, a in rows if r["track_id"] is not None]
            unknown = [a for r, a in rows if r["track_id"] is None]
            right = [a for r, a in known if a["track_id"] == r["track_id"]]
            wrong = [a for r, a in known if a["track_id"] not in (None, r["track_id"])]
            fp = [a for a in unknown if a["track_id"] is not None]
            lat = np.array([a["ms"] for _, a in rows if a["ms"] is not None] or [0.0])
            lines.append(
                f"{level.name:6} {('all' if length is None else f'{length:g}s'):>4} {len(known):4d} "
                f"{_pct(len(right), len(known)):>6} {_pct(len(wrong), len(known)):>6} "
                f"{_pct(len(known) - len(right) - len(wrong), len(known)):>6} {len(unknown):6d} "
                f"{_pct(len(fp), len(unknown)):>7} {_pct(len(wrong) + len(fp), len(rows)):>9} "
                f"{np.percentile(lat, 50):7.0f} {np.percentile(lat, 95):7.0f}")
    return "\n".join(lines)


def listen_table(results: list[dict], levels: list[Level], steps: list[float]) -> str:
    """Per level: the widget's right answers by each upload, seconds to a right first match,
    recordings never answered or first answered wrong, unknown recordings ever matched."""
    by = " ".join(f"{f'≤{s:g}s':>6}" for s in steps)
    lines = [f"{'level':6} {'n':>4} {by} {'median':>7} {'p90':>5} {'never':>6} {'1st wrong':>9} "
             f"{'unk n':>6} {'unk any':>7}"]
    for level in levels:
        known = [r for r in results if r["level"] == level.name and r["track_id"] is not None]
        unknown = [r for r in results if r["level"] == level.name and r["track_id"] is None]
        firsts = [(r, first_match(r, steps)) for r in known]
        right_at = [f[0] for r, f in firsts if f and f[1]["track_id"] == r["track_id"]]
        wrong = [r for r, f in firsts if f and f[1]["track_id"] != r["track_id"]]
        never = [r for r, f in firsts if f is None]
        cumulative = " ".join(f"{_pct(sum(t <= s for t in right_at), len(known)):>6}" for s in steps)
        median = f"{np.median(right_at):6.1f}s" if right_at else "     -"
        p90 = f"{np.percentile(right_at, 90):4.1f}s" if right_at else "    -"
        ever = [r for r in unknown if first_match(r, steps)]
        lines.append(f"{level.name:6} {len(known):4d} {cumulative} {median:>7} {p90:>5} "
                     f"{_pct(len(never), len(known)):>6} {_pct(len(wrong), len(known)):>9} {len(unknown):6d} "
                     f"{_pct(len(ever), len(unknown)):>7}")
    return "\n".join(lines)


def wrong_first(results: list[dict], steps: list[float]) -> str:
    """The widget's wrong first answers by name: the recording, when, whom, how sure, and
    whether its later uploads named the right track."""
    wrong = []
    for r in results:
        first = first_match(r, steps)
        if first and first[1]["track_id"] != r["track_id"]:
            later = [s for s in steps if s > first[0] and r["track_id"] is not None
                     and r["answers"][f"{s:g}"]["track_id"] == r["track_id"]]
            wrong.append((r, first, later))
    unknown = sum(r["track_id"] is None for r, _, _ in wrong)
    lines = [f"wrong first answers: {len(wrong)} (catalog {len(wrong) - unknown}, unknown {unknown})"]
    for r, (seconds, answer), later in wrong[:_LISTED]:
        truth = "unknown" if r["track_id"] is None else f"track {r['track_id']}"
        lines.append(f"  {r['level']:5} {Path(r['source']).name[:40]:40} at {r['start_s']:6.1f} s "
                     f"({truth}): track {answer['track_id']} at {seconds:g} s, confidence "
                     f"{answer['confidence']:.2f}" + (f"; right from {later[0]:g} s" if later else ""))
    if len(wrong) > _LISTED:
        lines.append(f"  ... and {len(wrong) - _LISTED} more (listen-results.json)")
    return "\n".join(lines)


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:5.1f}%" if total else "-"
