"""`ear eval`: identification benchmark on degraded clips of a catalog, printed as tables.

Everything lands in a work folder (`--work`), so a second run reuses the catalog, the
distractors and the query files, and only identifies again.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

import torch

from . import fusion
from .catalog import Catalog, PreparedTrack, audio_files, prepared_from_samples
from .config import Config
from .db import Track, database
from .decode import decode
from .embed import Model
from .degrade import (LEVELS, RATE, degrade, encode_opus_webm, pink_noise, read_clip, resample)
from .errors import EarError

_BABBLE_TEXT = [
    "I told him we would meet at the station after lunch, but the train was late again.",
    "Could you pass me the menu? I think they changed the specials since last week.",
    "The weather has been strange all month, rain in the morning and sun by the evening.",
    "She said the concert was sold out, so we will probably watch it online instead.",
    "Do you remember where we parked? I am sure it was somewhere near the bakery.",
    "They are building a new bridge across the river and the traffic is terrible.",
]
_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en+m3", "en+f4"]


def add_arguments(p) -> None:
    p.add_argument("--catalog", action="append", required=True, metavar="DIR",
                   help="folder of catalog audio (repeatable)")
    p.add_argument("--unknown", action="append", default=[], metavar="DIR",
                   help="folder of audio NOT in the catalog, for the false-positive rate")
    p.add_argument("--work", default="eval-work", help="folder for the catalog, queries, results")
    p.add_argument("--levels", default="CLEAN,SOFT,HARD,ULTRA")
    p.add_argument("--lengths", default="5,10", help="clip lengths in seconds")
    p.add_argument("--clips-per-track", type=int, default=1, help="per length and level")
    p.add_argument("--unknown-clips", type=int, default=100, help="per level")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--distractors", type=int, default=0,
                   help="add this many pitch/tempo-shifted copies of catalog tracks")
    p.add_argument("--rebuild", action="store_true", help="ingest the catalog again")
    p.add_argument("--service-queries", type=int, default=100,
                   help="queries sent to a real Gunicorn for its memory (0: skip)")
    p.add_argument("--similar", action="store_true",
                   help="also measure similar-track precision@10 against an MFCC baseline")
    p.add_argument("--labels", metavar="CSV",
                   help="for --similar: lines 'folder,artist,genre'; a track under folder gets "
                        "those labels (default: the tracks' own artist and genre)")


def run(config: Config, args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = replace(config, data_dir=work / "catalog")
    if args.rebuild and cfg.data_dir.exists():
        subprocess.run(["rm", "-rf", str(cfg.data_dir)], check=True)
    catalog = Catalog(cfg)
    ingest_stats = _ingest(catalog, args.catalog, work / "ingest.json")
    _add_distractors(catalog, args.distractors, args.seed)
    catalog.rebuild_index()
    levels = [LEVELS[name.strip().upper()] for name in args.levels.split(",")]
    lengths = [float(x) for x in args.lengths.split(",")]
    with database.connection_context():
        real = list(Track.select().where(~Track.source.startswith("distractor:")).order_by(Track.id))
        total_tracks = Track.select().count()
    noise = noise_bank(work / "noise", args.seed)
    queries = _make_queries(work / "queries", real, levels, lengths, args, noise)
    unknown = _make_unknown(work / "unknown", args.unknown, levels, args, noise)

    results = _identify_all(catalog, queries + unknown)
    (work / "results.json").write_text(json.dumps(results))
    catalog.table.refresh()
    index_bytes = sum((cfg.fingerprint_dir / s["file"]).stat().st_size
                      for s in catalog.table.manifest.segments)
    embedding_bytes = sum(p.stat().st_size for p in cfg.embedding_dir.iterdir()
                          if p.suffix in (".ann", ".npy", ".npz"))
    with database.connection_context():
        catalog_seconds = sum(t.duration for t in Track.select(Track.duration))
    print(f"catalog: {len(real)} tracks ({total_tracks - len(real)} distractors), "
          f"{catalog_seconds / 3600:.1f} h, {catalog.table.landmark_count} landmarks, "
          f"index {index_bytes / 1e6:.1f} MB = {index_bytes / catalog_seconds:.0f} bytes/s of audio; "
          f"embedding indexes {embedding_bytes / 1e6:.1f} MB = "
          f"{embedding_bytes / catalog_seconds:.0f} bytes/s ({catalog.index.window_count} windows)")
    print(_embedding_cost(catalog, [q for q in queries if q["length_s"] == 10][:50]))
    if ingest_stats:
        audio_s, cpu_s = ingest_stats["audio_s"], ingest_stats["cpu_s"]
        embedding_s = ingest_stats.get("embedding_cpu_s", 0.0)
        print(f"ingest: {audio_s / cpu_s:.0f}x real time per CPU core "
              f"(decode included; {audio_s / ingest_stats['wall_s']:.0f}x wall), "
              f"{ingest_stats['tracks']} tracks, {ingest_stats['skipped']} skipped; by stage: "
              f"decode + fingerprint {audio_s / max(cpu_s - embedding_s, 1e-9):.0f}x, "
              f"embedding {audio_s / max(embedding_s, 1e-9):.0f}x")
    print("top-1: the answer is the right track; top-5: the right track is among the first five "
          "of the ranking, answered or not (`ear identify --candidates 5`); FP: unknown clips "
          "given an answer")
    print(_ab_table(results, levels))
    print("fusion (what /identify answers), by clip length:")
    print(_table(results, levels, lengths))
    if args.similar:
        from .similar_eval import similarity_report
        print(similarity_report(catalog, args.labels))
    rss = _proc_status()
    print(f"memory: peak RSS {rss.get('VmHWM', 0) / 1024:.0f} MB (this process, ingest included), "
          f"now {rss.get('VmRSS', 0) / 1024:.0f} MB")
    if args.service_queries:
        # Measured from a fresh process: this one maps torch's libraries, and pages it shares
        # with the service would not count as the service's private memory.
        listing = work / "service-queries.json"
        listing.write_text(json.dumps([q["file"] for q in queries]))
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "ear.service_memory", str(cfg.data_dir),
                                  str(args.service_queries), str(listing)])
    return 0


def _embedding_cost(catalog: Catalog, clips: list[dict]) -> str:
    """Model load time, and the time to embed 10 s clips with the configured thread count."""
    started = time.perf_counter()
    Model()
    load_s = time.perf_counter() - started
    times = []
    for q in clips:
        samples = decode(q["file"], max_seconds=30, timeout_s=60)
        started = time.perf_counter()
        catalog.model.windows(samples, hop_s=fusion.QUERY_HOP_S)
        times.append((time.perf_counter() - started) * 1000)
    return (f"model: load {load_s * 1000:.0f} ms; embedding a 10 s clip ({len(times)} clips, "
            f"{torch.get_num_threads()} thread): p50 {np.percentile(times or [0], 50):.1f} ms, "
            f"p95 {np.percentile(times or [0], 95):.1f} ms")


# ---- catalog ---------------------------------------------------------------------------------
def _ingest(catalog: Catalog, folders: list[str], stats_path: Path) -> dict | None:
    if catalog.table.landmark_count:
        return json.loads(stats_path.read_text()) if stats_path.exists() else None
    files = list(audio_files(folders))
    started_wall, started_cpu = time.perf_counter(), _cpu_seconds()
    batch: list[PreparedTrack] = []
    audio_s, embedding_s, skipped = 0.0, 0.0, 0
    for path in files:
        try:
            item = catalog.prepare(path, name=str(path))
        except EarError as exc:
            print(f"skipped {path}: {exc.message}")
            skipped += 1
            continue
        audio_s += item.duration
        embedding_s += item.embedding_cpu_s
        batch.append(item)
        if len(batch) >= 50:
            catalog.store(batch)
            batch.clear()
    if batch:
        catalog.store(batch)
    stats = {"tracks": len(files) - skipped, "skipped": skipped, "audio_s": audio_s,
             "wall_s": time.perf_counter() - started_wall, "cpu_s": _cpu_seconds() - started_cpu,
             "embedding_cpu_s": embedding_s}
    stats_path.write_text(json.dumps(stats))
    return stats


def _add_distractors(catalog: Catalog, wanted: int, seed: int) -> None:
    """Pitch/tempo-shifted copies (3-15 % off speed) of catalog tracks: unlike anything a
    query should match, but music with the same texture and statistics. They are fingerprinted,
    not embedded (the large-catalog targets are the fingerprinter's, and embedding 10,000 tracks
    would take hours here), on every core."""
    with database.connection_context():
        have = Track.select().where(Track.source.startswith("distractor:")).count()
        originals = list(Track.select().where(~Track.source.startswith("distractor:")).order_by(Track.id))
    if have >= wanted or not originals:
        return
    rng = np.random.default_rng(seed + 7)
    copies = -(-wanted // len(originals))
    jobs, made = [], have
    for original in originals:
        n = min(copies, wanted - made)
        if n <= 0:
            break
        factors = [float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.15) + 1) for _ in range(n)]
        jobs.append((original.source, original.id, factors, made, catalog.config.max_track_seconds))
        made += n
    started, done = time.perf_counter(), have
    # spawn: a forked child would inherit torch's thread pools mid-state
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        for batch in pool.map(_distractor_copies, jobs):
            catalog.store(batch)
            done += len(batch)
            print(f"distractors: {done}/{wanted} ({time.perf_counter() - started:.0f} s)", flush=True)


def _distractor_copies(job: tuple) -> list[PreparedTrack]:
    source, original_id, factors, first, max_seconds = job
    torch.set_num_threads(1)
    samples = decode(source, max_seconds=max_seconds, timeout_s=600)
    return [prepared_from_samples(resample(samples, factor), f"distractor:{original_id}:{factor:.4f}",
                                  {"title": f"distractor {first + i}"}, f"distractor-{first + i}", None)
            for i, factor in enumerate(factors)]


# ---- queries ---------------------------------------------------------------------------------
def noise_bank(folder: Path, seed: int) -> dict[str, np.ndarray]:
    """Three kinds of room noise at RATE: speech babble, pink noise, and ambience (recorded
    sound effects from Debian game packages, when installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    bank = {}
    rng = np.random.default_rng(seed)
    babble_path = folder / "babble.npy"
    if not babble_path.exists():
        voices = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, (voice, text) in enumerate(zip(_VOICES, _BABBLE_TEXT)):
                wav = Path(tmp) / f"{k}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav),
                                " ".join(_BABBLE_TEXT[k:] + _BABBLE_TEXT[:k])], check=True)
                voices.append(read_clip(wav, 0, 600))
        n = min(v.size for v in voices)
        babble = sum(np.roll(v[:n], rng.integers(0, n)) for v in voices)
        np.save(babble_path, babble.astype(np.float32))
    bank["babble"] = np.load(babble_path)
    bank["pink"] = pink_noise(RATE * 60, rng)
    ambience_path = folder / "ambience.npy"
    if not ambience_path.exists():
        effects = [p for d in ("/usr/share/games/frozen-bubble/snd", "/usr/share/hyperrogue/sounds")
                   for p in sorted(Path(d).glob("*.ogg")) if "zik" not in p.name]
        mix = np.zeros(RATE * 60, np.float32)
        for p in effects[:80]:
            try:
                sound = read_clip(p, 0, 20)
            except subprocess.CalledProcessError:
                continue
            at = rng.integers(0, mix.size - sound.size)
            mix[at:at + sound.size] += sound * rng.uniform(0.2, 1.0)
        mix += pink_noise(mix.size, rng) * 0.05 * (np.std(mix) or 1.0)
        np.save(ambience_path, mix)
    bank["ambience"] = np.load(ambience_path)
    return bank


def _cached(folder: Path, spec: dict, plan, noise) -> list[dict]:
    """Query jobs planned by `plan()` and rendered to files, reused while `spec` is unchanged."""
    index = folder / "queries.json"
    if index.exists():
        saved = json.loads(index.read_text())
        if saved["spec"] == spec:
            return saved["queries"]
    folder.mkdir(parents=True, exist_ok=True)
    jobs = plan()
    for n, job in enumerate(jobs):
        job["file"] = str(folder / f"{n:05d}-{job['level']}.webm")
        job["noise"] = list(noise)[n % len(noise)]
    _render(jobs, noise)
    index.write_text(json.dumps({"spec": spec, "queries": jobs}))
    return jobs


def _make_queries(folder: Path, tracks: list[Track], levels, lengths, args, noise) -> list[dict]:
    def plan() -> list[dict]:
        rng = np.random.default_rng(args.seed)
        jobs, clip_no = [], 0
        for track in tracks:
            for length in lengths:
                for _ in range(args.clips_per_track):
                    if track.duration < length * 1.05 + 0.5:
                        continue
                    start = float(rng.uniform(0, track.duration - length * 1.02 - 0.2))
                    # Every other clip is off speed where the level says so, half of them faster.
                    direction = {1: 1, 3: -1}.get(clip_no % 4, 0)
                    clip_no += 1
                    for level in levels:
                        jobs.append({"source": track.source, "track_id": track.id, "start_s": start,
                                     "length_s": length, "level": level.name,
                                     "speed": 1.0 + direction * level.speed_error,
                                     "seed": int(rng.integers(1 << 31))})
        return jobs

    spec = {"plan": 2, "seed": args.seed, "tracks": [t.id for t in tracks], "lengths": lengths,
            "levels": [lv.name for lv in levels], "per": args.clips_per_track}
    return _cached(folder, spec, plan, noise)


def _make_unknown(folder: Path, dirs: list[str], levels, args, noise) -> list[dict]:
    if not dirs:
        return []
    files = list(audio_files(dirs))

    def plan() -> list[dict]:
        rng = np.random.default_rng(args.seed + 1)
        durations = {}
        for f in files:
            out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                  "-of", "csv=p=0", str(f)], capture_output=True, text=True)
            try:
                durations[f] = float(out.stdout.strip())
            except ValueError:
                pass
        usable = [f for f, d in durations.items() if d > 12]
        jobs = []
        for n in range(args.unknown_clips):
            f = usable[n % len(usable)]
            length = 10.0 if n % 2 else 5.0
            start = float(rng.uniform(0, durations[f] - length - 0.5))
            for level in levels:
                jobs.append({"source": str(f), "track_id": None, "start_s": start,
                             "length_s": length, "level": level.name, "speed": 1.0,
                             "seed": int(rng.integers(1 << 31))})
        return jobs

    spec = {"seed": args.seed, "files": [str(f) for f in files], "n": args.unknown_clips,
            "levels": [lv.name for lv in levels]}
    return _cached(folder, spec, plan, noise)


def _render(jobs: list[dict], noise: dict[str, np.ndarray]) -> None:
    def one(job: dict) -> None:
        level = LEVELS[job["level"]]
        rng = np.random.default_rng(job["seed"])
        clip = read_clip(Path(job["source"]), job["start_s"], job["length_s"] * job["speed"] + 0.05)
        if job["speed"] != 1.0:
            clip = resample(clip, job["speed"])
        clip = clip[: int(job["length_s"] * RATE)]
        encode_opus_webm(degrade(clip, level, noise[job["noise"]], rng), Path(job["file"]), level.opus_kbps)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, jobs))
    print(f"rendered {len(jobs)} query clips in {time.perf_counter() - started:.0f} s", flush=True)


# ---- identification --------------------------------------------------------------------------
def _identify_all(catalog: Catalog, queries: list[dict]) -> list[dict]:
    results = []
    for q in queries:
        try:
            samples = decode(q["file"], max_seconds=catalog.config.max_query_seconds, timeout_s=60)
        except EarError as exc:  # e.g. a silent stretch of unknown music: refused, not answered
            results.append({**q, "error": exc.message, "elapsed_ms": None, "dsp": [], "ml": [],
                            "matches": [], "ranking": {"dsp": [], "ml": [], "matches": []},
                            "candidates": []})
            continue
        started = time.perf_counter()
        found = catalog.identification(samples)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if not found.embedding:  # the service skipped them (landmarks beyond doubt); ML-only needs them
            found.embedding = [(t, off, score) for t, (score, off) in sorted(
                catalog.embedding_votes(samples).items(), key=lambda kv: -kv[1][0])]
        by_z = sorted((e for e in found.candidates if e.fingerprint_z > 0),
                      key=lambda e: -e.fingerprint_z)
        results.append({
            **q, "elapsed_ms": elapsed_ms,
            "dsp": [{"track_id": t, "offset_s": off, "score": z} for t, off, z in found.fingerprint],
            "ml": [{"track_id": t, "offset_s": off, "score": sc}
                   for t, off, sc in found.embedding[:5] if sc >= fusion.EMBEDDING_SCORE],
            "matches": [_evidence_json(e) for e in found.fused[:5]],
            # Each method's ranking, answers or not (what `--candidates 5` lists): top-5.
            "ranking": {"dsp": [e.track_id for e in by_z[:5]],
                        "ml": [t for t, _, _ in found.embedding[:5]],
                        "matches": [e.track_id for e in found.candidates[:5]]},
            "candidates": [_evidence_json(e) for e in found.candidates[:8]]})
    return results


def _evidence_json(e: fusion.Evidence) -> dict:
    return {"track_id": e.track_id, "offset_s": e.offset_s, "other_offsets_s": list(e.other_offsets_s),
            "score": round(e.fused, 2), "confidence": e.confidence, "z": e.fingerprint_z,
            "embedding": e.embedding_score, "agree": e.agree}


METHODS = {"DSP": "dsp", "ML": "ml", "Fusion": "matches"}


def _ab_table(results: list[dict], levels) -> str:
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


def _pct(part: list, whole: list) -> str:
    return f"{100 * len(part) / max(len(whole), 1):5.1f}%"


def _table(results: list[dict], levels, lengths) -> str:
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


def _offset_ok(best: dict, start_s: float, tolerance: float) -> bool:
    # Any reported offset of the right track counts: ambiguous offsets are all returned.
    return any(abs(offset - start_s) <= tolerance
               for offset in [best["offset_s"], *best.get("other_offsets_s", [])])


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _proc_status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out
