"""`ear eval --hum`: query by humming on synthetic beats and hums (lab/hum_synth.py).

Renders `--beats` beats into a catalog (once: the work folder keeps them), sings `--per-level`
hums of random catalog melodies at each level and `--unknown` hums of melodies no beat has
(moderate level), asks each of them (`hum.search`, as `ear hum` and POST /hum do), and prints
top-1, top-10, MRR, the matched span, latency and false positives per level; then what the
melody chain costs: CPU per track at ingest and the private memory a process adds when it
loads the library's melodies. `--distractors N` adds N melodies to the library (contours of
unknown tunes, as pitch.py hears them sung cleanly, with no audio) to measure latency at scale.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import hum, melody_index, pitch
from ..catalog import Catalog
from ..config import Config
from ..db import Track, database
from ..decode import decode_query, decode_track
from ..models import shipped_model
from ..errors import BadAudio
from ..ingest import prepare
from ..ids import track_ids
from ..progress import Progress
from . import hum_beats, hum_synth
from .degrade import noise_bank

_RANKED = 10  # top-10, and MRR over the first ten
_SPAN_S = 2.0  # the matched span's start within 2 s of the hum's first note


def add_arguments(p) -> None:
    p.add_argument("--hum", action="store_true", required=True)
    p.add_argument("--work", default="hum-work", help="folder for beats, catalog, hums, results")
    p.add_argument("--beats", type=int, default=500)
    p.add_argument("--per-level", type=int, default=100, help="hums per level")
    p.add_argument("--unknown", type=int, default=100, help="hums of melodies not in the catalog")
    p.add_argument("--levels", default="easy,moderate,hard")
    p.add_argument("--distractors", type=int, default=0, help="extra melodies without audio (scale)")
    p.add_argument("--seed", type=int, default=0, help="of the beats")
    p.add_argument("--query-seed", type=int, help="of the hums (default: --seed): other hums, same beats")


def run(config: Config, args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bar = Progress(args.beats)
    beats = hum_synth.make_beats(work / "beats", args.beats, args.seed, progress=lambda done, total: bar.step())
    bar.done()
    catalog = Catalog(replace(config, data_dir=work / "catalog"))
    ids, cost = _ingest(catalog, beats)
    if args.distractors:
        _add_distractors(catalog, args.distractors, args.seed, work / "beats")
    library = catalog.library()
    memory = _melody_memory(catalog.config.data_dir)
    noise = noise_bank(work / "noise", args.seed)
    query_seed = args.seed if args.query_seed is None else args.query_seed
    rng = np.random.default_rng(query_seed)
    results = []
    levels = [hum_synth.HUM_LEVELS[name.strip()] for name in args.levels.split(",")]
    for level in levels:
        for i in range(args.per_level):
            beat = beats[int(rng.integers(len(beats)))]
            results.append(_ask(catalog, library, work, level, beat, ids[beat.name], rng, noise, i))
    moderate = hum_synth.HUM_LEVELS["moderate"]
    for i, tune in enumerate(hum_synth.unknown_melodies(args.unknown, query_seed)):
        results.append(_ask(catalog, library, work, moderate, None, None, rng, noise, i, tune))
    (work / "results.json").write_text(json.dumps(results))
    print(f"catalog: {len(ids)} beats + {args.distractors} distractor melodies; "
          f"{len(library.melodies.generation.tracks)} melodies, "
          f"{library.melodies.generation.keys.size} grams")
    print(cost)
    print(memory)
    print(hum_table(results, [level.name for level in levels]))
    return 0


def _ingest(catalog: Catalog, beats: list) -> tuple[dict[str, int], str]:
    """Beats into the catalog (those not there yet); {beat name: track id}, and what the melody
    chain costs at ingest (measured on up to 20 beats)."""
    with database.connection_context():
        have = {Path(t.source).stem: t.id for t in Track.select()}
    todo = [b for b in beats if b.name not in have]
    bar = Progress(len(todo))
    for start in range(0, len(todo), 50):
        # Linked, not copied: `ear reindex --melodies` finds them again after a change of method.
        batch = [replace(prepare(b.path, catalog.config, shipped_model()), linked_path=str(b.path.resolve()))
                 for b in todo[start:start + 50]]
        for (track, _), beat in zip(catalog.store(batch), todo[start:start + 50]):
            have[beat.name] = track.id
        for _ in batch:
            bar.step()
    bar.done()
    seconds, cpu = 0.0, 0.0
    for beat in beats[:20]:
        audio = np.concatenate(list(decode_track(beat.path, catalog.config)))
        started = time.process_time()
        pitch.contour([audio], pitch.TRACK_LOWEST)
        cpu += time.process_time() - started
        seconds += audio.size / 16000
    per_3_min = cpu / max(seconds, 1e-9) * 180
    return have, (f"melody at ingest: {cpu / max(len(beats[:20]), 1) * 1000:.0f} ms CPU per beat "
                  f"({seconds / max(len(beats[:20]), 1):.0f} s of audio), {per_3_min * 1000:.0f} ms per 3 minutes")


def _add_distractors(catalog: Catalog, count: int, seed: int, beats_folder: Path) -> None:
    """`count` melodies of the beats' pool of tunes but of titles no beat has, stored as tracks'
    melodies without audio (as pitch.py hears a clean lead), for latency and memory at scale.
    They have no landmarks: the next `Catalog.store` reconciles them away (and a run adds them
    again)."""
    with database.connection_context():
        have = Track.select().where(Track.source.startswith("distractor ")).count()
    if have >= count:
        return
    used = frozenset(b["title"] for b in json.loads((beats_folder / "beats.json").read_text())["beats"])
    tunes = hum_beats.melodies(count, seed + 7, unknown=False, avoid=used)[have:]
    rng = np.random.default_rng(seed + 7)
    ids = track_ids(len(tunes))
    with database.connection_context(), database.atomic():
        for i, (tune, track_id) in enumerate(zip(tunes, ids), have):
            contour = _clean_contour(tune, rng)
            track = Track.create(id=track_id, title=f"distractor {i}", source=f"distractor {i}",
                                 duration=contour.size * pitch.FRAME_SECONDS, content_hash=f"distractor {i}")
            melody_index.store({track.id: contour}, track.library)


def _clean_contour(tune: list, rng: np.random.Generator) -> np.ndarray:
    frames = int((tune[-1].onset_s + tune[-1].duration_s) / pitch.FRAME_SECONDS) + 1
    contour = np.full(frames, np.nan, np.float32)
    shift = rng.integers(-5, 6)
    for note in tune:
        a = int(note.onset_s / pitch.FRAME_SECONDS)
        contour[a:a + max(1, int(0.9 * note.duration_s / pitch.FRAME_SECONDS))] = note.pitch + shift
    return contour


_MEMORY_PROBE = """
import os, sys, time
from pathlib import Path
from ear.catalog import Catalog
from ear.config import load_config
from ear.lab.service_memory import _smaps
def private_kb():
    found = _smaps(os.getpid())
    return found["Private_Clean"] + found["Private_Dirty"]
library = Catalog(load_config(data_dir=Path(sys.argv[1]))).library()
before = private_kb()
started = time.perf_counter()
library.melodies.refresh()
print(private_kb() - before, time.perf_counter() - started)
"""


def _melody_memory(data_dir: Path) -> str:
    """What loading the library's melodies adds to a fresh process (this one's heap holds the
    ingest's freed pages, which the melodies would reuse unseen)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(data_dir)], capture_output=True,
                         text=True, check=True).stdout.split()
    return f"melodies in memory: +{int(out[0]) / 1024:.1f} MB private in a fresh process, loaded in {float(out[1]):.2f} s"


def _ask(catalog, library, work: Path, level, beat, track_id, rng, noise, i: int, tune=None) -> dict:
    audio, truth = hum_synth.hum(tune if beat is None else beat.melody, level, rng, noise=noise)
    folder = work / "hums" / (level.name if beat is not None else "unknown")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{i:04d}.wav"
    sf.write(path, audio, 48000)
    result = {"level": level.name if beat is not None else "unknown", "track_id": track_id, **{
        k: v for k, v in truth.items() if k != "notes"}}
    started = time.perf_counter()
    try:
        found = hum.search(library.melodies, decode_query(path, catalog.config), k=_RANKED)
    except BadAudio as exc:
        found, result["error"] = [], exc.code
    result["elapsed_ms"] = (time.perf_counter() - started) * 1000
    result["ranking"] = [m.track_id for m in found]
    result["matches"] = [{"track_id": m.track_id, "start_s": m.start_s, "end_s": m.end_s}
                         for m in found if m.is_match]
    return result


def hum_table(results: list[dict], levels: list[str]) -> str:
    lines = [f"{'level':9} {'n':>4} {'top-1':>6} {'top-10':>7} {'MRR':>5} {'span':>6} "
             f"{'p50 ms':>7} {'p95 ms':>7} {'FP':>6}  (top-1: the first answered match is right; "
             f"span: its start within {_SPAN_S:g} s)"]
    for name in levels + ["unknown"]:
        rows = [r for r in results if r["level"] == name]
        if not rows:
            continue
        lat = np.array([r["elapsed_ms"] for r in rows])
        if name == "unknown":
            fp = sum(bool(r["matches"]) for r in rows) / len(rows)
            lines.append(f"{name:9} {len(rows):4d} {'':>6} {'':>7} {'':>5} {'':>6} "
                         f"{np.percentile(lat, 50):7.1f} {np.percentile(lat, 95):7.1f} {100 * fp:5.1f}%")
            continue
        top1 = [r for r in rows if r["matches"] and r["matches"][0]["track_id"] == r["track_id"]]
        top10 = [r for r in rows if r["track_id"] in r["ranking"][:_RANKED]]
        mrr = np.mean([1 / (r["ranking"].index(r["track_id"]) + 1) if r["track_id"] in r["ranking"] else 0
                       for r in rows])
        span = [r for r in top1 if abs(r["matches"][0]["start_s"] - r["start_s"]) <= _SPAN_S]
        lines.append(f"{name:9} {len(rows):4d} {100 * len(top1) / len(rows):5.1f}% "
                     f"{100 * len(top10) / len(rows):6.1f}% {mrr:5.2f} {100 * len(span) / max(len(top1), 1):5.1f}% "
                     f"{np.percentile(lat, 50):7.1f} {np.percentile(lat, 95):7.1f} {'':>6}")
    return "\n".join(lines)
