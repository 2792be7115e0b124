"""`ear busy`'s results (what busy.py measured, in one `Results`), its markdown tables with the
targets of issue 14, and its progress on stderr. Percentiles interpolate linearly between the
samples (numpy's default), computed here: the measuring process imports no numpy."""
from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

RATIO_TARGET = 1.5  # /identify p95 while the worker adds a bulk upload, over idle p95
JOB_GET_TARGET_MS = 50.0  # GET /jobs/<id> p95: an admin page polls it
SPEED_TARGET = 200.0  # seconds of audio added per CPU second of the ear worker
MEMORY_TARGET_MB = 260.0  # private memory of the three processes, idle
_QUIET_S = 10.0  # off a terminal, a progress line this often


@dataclass
class Results:
    uploads: int
    queued: int
    clips: int = 0
    catalog_tracks: int = 0
    catalog_s: float = 0.0
    ingest_s: float = 0.0
    # per phase (idle, bulk, queued): each query's (latency ms, "right" | "wrong" | "error")
    identify: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    post: dict[str, list[float]] = field(default_factory=lambda: {"bulk": [], "queued": []})
    get: dict[str, list[float]] = field(default_factory=lambda: {"bulk": [], "queued": []})
    list_ms: list[float] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)  # the bulk's, as GET /jobs/<id> ended them
    worker_cpu_s: float = 0.0  # its FFmpegs' included
    ffmpeg_cpu_s: float = 0.0
    bulk_s: float = 0.0
    queued_seen: int = 0  # what /health counted queued in the last phase
    memory: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    wall_s: float = 0.0
    load: dict[str, float] = field(default_factory=dict)  # 1-minute load average, by moment


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    at = (len(ordered) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def report(r: Results) -> str:
    """Every table, with a heading saying what was measured."""
    return "\n\n".join([
        f"## ear busy\n\nCatalog: {r.catalog_tracks} tracks, {r.catalog_s / 3600:.2f} h of audio "
        f"(`ear ingest`: {r.ingest_s:.0f} s). Queries: {r.clips} clips of 10 s, Opus/WebM 32 kbit/s, "
        f"sent one at a time. Bulk: {r.uploads} uploads POSTed one after another. Whole run: "
        f"{r.wall_s:.0f} s. Load average (1 min, {os.cpu_count()} CPUs): "
        + ", ".join(f"{load:.2f} {moment}" for moment, load in r.load.items()) + ".",
        identify_table(r), job_api_table(r), worker_table(r), memory_table(r)])


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def identify_table(r: Results) -> str:
    idle_p95 = percentile([ms for ms, _ in r.identify.get("idle", [])], 95)
    lines = ["### /identify latency", "",
             "| phase | queries | right | errors | p50 ms | p95 ms | max ms | p95 / idle p95 | target |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    labels = {"idle": "idle (ear worker idle)",
              "bulk": f"bulk upload ({r.uploads} files), until every job ended",
              "queued": f"{r.queued} jobs queued (ear worker stopped)"}
    for phase, label in labels.items():
        samples = r.identify.get(phase, [])
        ms = [m for m, _ in samples]
        outcomes = Counter(outcome for _, outcome in samples)
        ratio = percentile(ms, 95) / idle_p95
        target = f"≤ {RATIO_TARGET:g}: {_met(ratio <= RATIO_TARGET)}" if phase == "bulk" else ""
        lines.append(f"| {label} | {len(ms)} | {outcomes['right']} | {outcomes['error']} | "
                     f"{percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | {max(ms, default=math.nan):.0f} | "
                     f"{ratio:.2f} | {target} |")
    return "\n".join(lines)


def job_api_table(r: Results) -> str:
    lines = ["### Job API latency", "",
             "| request | while | n | p50 ms | p95 ms | max ms | target |",
             "|---|---|--:|--:|--:|--:|---|"]
    rows = [("POST /tracks", f"bulk upload ({r.uploads} files)", r.post["bulk"], False),
            ("GET /jobs/<id>", "bulk upload (polled every 0.5 s)", r.get["bulk"], True),
            ("POST /tracks", f"queueing {r.queued} (ear worker stopped)", r.post["queued"], False),
            ("GET /jobs/<id>", f"{r.queued_seen} queued", r.get["queued"], True),
            ("GET /jobs (newest 100)", f"{r.queued_seen} queued", r.list_ms, False)]
    for request, during, ms, targeted in rows:
        p95 = percentile(ms, 95)
        target = f"p95 ≤ {JOB_GET_TARGET_MS:g} ms: {_met(p95 <= JOB_GET_TARGET_MS)}" if targeted else ""
        lines.append(f"| {request} | {during} | {len(ms)} | {percentile(ms, 50):.1f} | {p95:.1f} | "
                     f"{max(ms, default=math.nan):.1f} | {target} |")
    return "\n".join(lines)


def worker_table(r: Results) -> str:
    done = [j for j in r.jobs if j["status"] == "done"]
    failed = Counter(j.get("error", {}).get("code", "?") for j in r.jobs if j["status"] == "failed")
    audio_s = sum(j["track"]["duration"] for j in done if "track" in j)
    speed = audio_s / r.worker_cpu_s if r.worker_cpu_s else math.nan
    why = ", ".join(f"{code} ×{n}" for code, n in failed.most_common())
    return "\n".join([
        "### Bulk upload: the ear worker", "",
        "| uploads | done | failed | audio added | wall s | worker CPU s (FFmpeg incl.) | of which FFmpeg | "
        "× real time per CPU s | target |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        f"| {r.uploads} | {len(done)} | {sum(failed.values())}{f' ({why})' if why else ''} | "
        f"{audio_s:.0f} s ({audio_s / 3600:.2f} h) | {r.bulk_s:.0f} | {r.worker_cpu_s:.1f} | "
        f"{r.ffmpeg_cpu_s:.1f} | {speed:.0f} | "
        f"≥ {SPEED_TARGET:g}: {_met(speed >= SPEED_TARGET)} |"])


def memory_table(r: Results) -> str:
    before, after = r.memory.get("before", {}), r.memory.get("after", {})
    lines = ["### Memory (MB; private = Private_Clean + Private_Dirty of /proc/PID/smaps_rollup)", "",
             "| process | private, idle before the bulk | private, after it | Pss before | Pss after |",
             "|---|--:|--:|--:|--:|"]
    for name in before:
        lines.append(f"| {name} | {before[name][0]:.1f} | {after[name][0]:.1f} | "
                     f"{before[name][1]:.1f} | {after[name][1]:.1f} |")
    total = [sum(m[i] for m in snap.values()) for snap in (before, after) for i in (0, 1)]
    lines.append(f"| **total** | {total[0]:.1f} | {total[2]:.1f} | {total[1]:.1f} | {total[3]:.1f} |")
    lines += ["", f"Target: total private idle ≤ {MEMORY_TARGET_MB:g} MB: "
                  f"{_met(total[0] <= MEMORY_TARGET_MB)}. Pages the web worker and the ear worker "
                  "both map (torch's library) are private to neither; Pss shares them out."]
    return "\n".join(lines)


class Status:
    """A phase's progress on stderr: one line redrawn on a terminal, else one every _QUIET_S."""

    def __init__(self, phase: str, quiet: bool = False) -> None:
        self.phase, self.quiet, self.text = phase, quiet, ""
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def say(self, text: str) -> None:
        self.text = text
        now = time.monotonic()
        if self.quiet or not (self.tty or now - self.shown >= _QUIET_S):
            return
        self.shown = now
        sys.stderr.write(f"\r\033[K{self.phase}: {text}" if self.tty else f"{self.phase}: {text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        sys.stderr.write(("\r\033[K" if self.tty else "") + f"{self.phase}: {self.text} in {elapsed:.0f} s\n")
        sys.stderr.flush()
