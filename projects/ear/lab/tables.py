"""`ear eval`'s tables from its results (one dict per query; see `eval.identify_all`)."""
from __future__ import annotations

import numpy as np

from .degrade import Level

METHODS = {"DSP": "dsp", "ML": "ml", "Fusion": "matches"}


def methods_table(results: list[dict], levels: list[Level]) -> str:
    """Fingerprints alone, embeddings alone, both: the same queries, all lengths together."""
    lines = [f"{'level':6} {'method':7} {'n':>4} {'top-1':>6} {'top-5':>6} {'off±0.5':>8} {'FP':>6}"]
    for level in levels:
        known = [r for r in results if r["level"] == level.name and r["track_id"] is not None]
        unknown = [r for r in results if r["level"] == level.name and r["track_id"] is None]
        for method, key in METHODS.items():
            top1 = [r for r in known if r[key] and r[key][0]["track_id"] == r["track_id"]]
            top5 = [r for r in known if r["track_id"] in r["ranking"][key]]
            off05 = [r for r in top1 if _offset_ok(r[key][0], r["start_s"], 0.5)]
            fp = [r for r in unknown if r[key]]
            lines.append(f"{level.name:6} {method:7} {len(known):4d} {_pct(top1, known):>6} "
                         f"{_pct(top5, known):>6} {_pct(off05, top1):>8} "
                         f"{_pct(fp, unknown) if unknown else '-':>6}")
    return "\n".join(lines)


def fusion_table(results: list[dict], levels: list[Level], lengths: list[float]) -> str:
    """What /identify answers, by level and clip length: accuracy, offsets, latency, FP."""
    lines = [f"{'level':6} {'len':>4} {'n':>4} {'top-1':>6} {'top-5':>6} {'off±0.5':>8} {'off±2':>6} "
             f"{'1st±0.5':>8} {'offs':>5} {'p50 ms':>7} {'p95 ms':>7} {'unk n':>6} {'FP':>6}"]
    for level in levels:
        for length in lengths + [None]:
            known = [r for r in results if r["level"] == level.name and r["track_id"] is not None
                     and (length is None or r["length_s"] == length)]
            unknown = [r for r in results if r["level"] == level.name and r["track_id"] is None
                       and (length is None or r["length_s"] == length)]
            if not known:
                continue
            top1 = [r for r in known if r["matches"] and r["matches"][0]["track_id"] == r["track_id"]]
            top5 = [r for r in known if r["track_id"] in r["ranking"]["matches"]]
            off05 = [r for r in top1 if _offset_ok(r["matches"][0], r["start_s"], 0.5)]
            off2 = [r for r in top1 if _offset_ok(r["matches"][0], r["start_s"], 2.0)]
            first05 = [r for r in top1 if abs(r["matches"][0]["offset_s"] - r["start_s"]) <= 0.5]
            named = np.mean([1 + len(r["matches"][0]["other_offsets_s"]) for r in top1] or [0.0])
            lat = np.array([r["elapsed_ms"] for r in known if r["elapsed_ms"] is not None] or [0.0])
            fp = [r for r in unknown if r["matches"]]
            lines.append(
                f"{level.name:6} {('all' if length is None else f'{length:g}s'):>4} {len(known):4d} "
                f"{_pct(top1, known):>6} {_pct(top5, known):>6} {_pct(off05, top1):>8} {_pct(off2, top1):>6} "
                f"{_pct(first05, top1):>8} {named:5.1f} {np.percentile(lat, 50):7.1f} {np.percentile(lat, 95):7.1f} "
                f"{len(unknown):6d} {_pct(fp, unknown) if unknown else '-':>6}")
    return "\n".join(lines)


def _pct(part: list, whole: list) -> str:
    return f"{100 * len(part) / max(len(whole), 1):5.1f}%"


def _offset_ok(best: dict, start_s: float, tolerance: float) -> bool:
    # Any reported offset of the right track counts: ambiguous offsets are all returned.
    return any(abs(offset - start_s) <= tolerance
               for offset in [best["offset_s"], *best.get("other_offsets_s", [])])
