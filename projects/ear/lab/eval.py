"""`ear eval`: identification benchmark on degraded clips of a catalog, printed as tables.

Everything lands in a work folder (`--work`), so a second run reuses the catalog, the
distractors and the query files, and only identifies again. Besides what /identify answers
(fusion), it scores each kind of evidence alone, computed from the service's public stages:
the fingerprint's answers (`match.fingerprint_suffices` over the evidence) and the embeddings'
votes (`identify.embed_query`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import fusion
from ..catalog import Catalog
from ..config import Config
from ..decode import decode_query
from ..embed import Model
from ..models import serving_model
from ..errors import EarError
from ..segments import KEY_BYTES
from ..identify import embed_query, identification
from ..match import fingerprint_suffices
from . import bench_catalog, clips
from .degrade import LEVELS, noise_bank
from .service_memory import add_gunicorn_conf_argument
from .tables import fusion_table, methods_table

_RANKED = 5  # top-5: the right track among the first five of the ranking


def add_benchmark_arguments(p, lengths: str) -> None:
    """The options `ear eval` and `ear eval --listen` share: the music, the work folder, the
    levels and how many clips of what length."""
    p.add_argument("--catalog", action="append", required=True, metavar="DIR",
                   help="folder of catalog audio (repeatable; ingested unless --work has it)")
    p.add_argument("--unknown", action="append", default=[], metavar="DIR",
                   help="folder of audio NOT in the catalog, for the false-positive rate")
    p.add_argument("--work", default="eval-work", help="folder for the catalog, queries, results")
    p.add_argument("--levels", default="CLEAN,SOFT,HARD,ULTRA")
    p.add_argument("--lengths", default=lengths, help="clip lengths in seconds")
    p.add_argument("--clips-per-track", type=int, default=1, help="per length and level")
    p.add_argument("--unknown-clips", type=int, default=100, help="per level")
    p.add_argument("--seed", type=int, default=1)


def add_arguments(p) -> None:
    add_benchmark_arguments(p, "5,10")
    p.add_argument("--distractors", type=int, default=0,
                   help="add this many pitch/tempo-shifted copies of catalog tracks")
    p.add_argument("--rebuild", action="store_true", help="ingest the catalog again")
    p.add_argument("--service-queries", type=int, default=100,
                   help="queries sent to a real Gunicorn for its memory (0: skip)")
    add_gunicorn_conf_argument(p)
    p.add_argument("--similar", action="store_true",
                   help="also measure similar-track precision@10 against an MFCC baseline")
    p.add_argument("--labels", metavar="CSV",
                   help="for --similar: lines 'folder,artist,genre'; a track under folder gets "
                        "those labels (default: the tracks' own artist and genre)")


def run(config: Config, args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.service_queries and not Path(args.gunicorn_conf).is_file():
        raise EarError("no_gunicorn_conf", f"No Gunicorn settings at {args.gunicorn_conf}: run from "
                       "ear's checkout, pass --gunicorn-conf, or --service-queries 0.")
    cfg = replace(config, data_dir=work / "catalog")
    if args.rebuild and cfg.data_dir.exists():
        subprocess.run(["rm", "-rf", str(cfg.data_dir)], check=True)
    catalog = Catalog(cfg)
    ingest_stats = bench_catalog.ingest(catalog, args.catalog, work / "ingest.json")
    bench_catalog.add_distractors(catalog, args.distractors, args.seed)
    catalog.rebuild_index()
    levels = [LEVELS[name.strip().upper()] for name in args.levels.split(",")]
    lengths = [float(x) for x in args.lengths.split(",")]
    real = bench_catalog.real_tracks(catalog)
    noise = noise_bank(work / "noise", args.seed)
    queries = clips.catalog_clips(work / "queries", real, levels, lengths, args.clips_per_track,
                                  args.seed, noise)
    unknown = clips.unknown_clips(work / "unknown", args.unknown, levels, args.unknown_clips,
                                  args.seed, noise)
    results = identify_all(catalog, queries + unknown)
    (work / "results.json").write_text(json.dumps(results))
    print(_catalog_summary(catalog, len(real)))
    print(_embedding_cost([q for q in queries if q["length_s"] == 10][:50], cfg))
    if ingest_stats:
        print(_ingest_summary(ingest_stats))
    print("top-1: the answer is the right track; top-5: the right track is among the first five "
          "of the ranking, answered or not (`ear identify --candidates 5`); FP: unknown clips "
          "given an answer")
    print(methods_table(results, levels))
    print("fusion (what /identify answers), by clip length:")
    print(fusion_table(results, levels, lengths))
    if args.similar:
        from .similar_eval import similarity_report
        print(similarity_report(catalog, real, args.labels))
    rss = _proc_status()
    print(f"memory: peak RSS {rss.get('VmHWM', 0) / 1024:.0f} MB (this process, ingest included), "
          f"now {rss.get('VmRSS', 0) / 1024:.0f} MB")
    if args.service_queries:
        # Measured from a fresh process: this one maps torch's libraries, and pages it shares
        # with the service would not count as the service's private memory.
        listing = work / "service-queries.json"
        listing.write_text(json.dumps([q["file"] for q in queries]))
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "ear.lab.service_memory", str(cfg.data_dir),
                                  str(args.service_queries), str(listing),
                                  str(Path(args.gunicorn_conf).resolve())])
    return 0


def identify_all(catalog: Catalog, queries: list[dict]) -> list[dict]:
    """Each query identified as /identify does (timed, decoding excluded), with what each kind
    of evidence alone would have answered."""
    results = []
    for q in queries:
        try:
            samples = decode_query(q["file"], catalog.config)
        except EarError as exc:  # e.g. a silent stretch of unknown music: refused, not answered
            results.append({**q, "error": exc.message, "elapsed_ms": None, "dsp": [], "ml": [],
                            "matches": [], "ranking": {"dsp": [], "ml": [], "matches": []},
                            "candidates": []})
            continue
        started = time.perf_counter()
        found = identification(catalog.library(), samples)
        elapsed_ms = (time.perf_counter() - started) * 1000
        results.append({**q, "elapsed_ms": elapsed_ms, **_by_method(catalog, samples, found)})
    return results


def _by_method(catalog: Catalog, samples: np.ndarray, found) -> dict:
    by_z = sorted((e for e in found.candidates if e.fingerprint_z > 0), key=lambda e: -e.fingerprint_z)
    dsp = [e for e in by_z if fingerprint_suffices(e.fingerprint_z, e.runner_up_z, e.threshold)]
    votes, _ = embed_query(catalog.library(), samples)  # the service skips it when the landmarks are sure
    known = catalog.library().known_ids(votes)
    ml = [(track, vote) for track, vote in fusion.ranked(votes) if track in known]
    return {
        "dsp": [{"track_id": e.track_id, "offset_s": e.offset_s, "score": e.fingerprint_z}
                for e in dsp[:catalog.config.top_k]],
        "ml": [{"track_id": t, "offset_s": v.offset_s, "score": v.score}
               for t, v in ml[:_RANKED] if v.score >= fusion.EMBEDDING_SCORE],
        "matches": [_evidence_json(e) for e in found.matches[:_RANKED]],
        # Each method's ranking, answers or not (what `--candidates 5` lists): top-5.
        "ranking": {"dsp": [e.track_id for e in by_z[:_RANKED]],
                    "ml": [t for t, _ in ml[:_RANKED]],
                    "matches": [e.track_id for e in found.candidates[:_RANKED]]},
        "candidates": [_evidence_json(e) for e in found.candidates[:8]]}


def _evidence_json(e: fusion.Evidence) -> dict:
    return {"track_id": e.track_id, "offset_s": e.offset_s, "other_offsets_s": list(e.other_offsets_s),
            "score": round(e.fused, 2), "confidence": e.confidence, "z": e.fingerprint_z,
            "embedding": e.embedding_score, "agree": e.agree}


def _catalog_summary(catalog: Catalog, real_count: int) -> str:
    catalog.library().table.refresh()
    tracks = catalog.tracks()
    seconds = sum(t.duration for t in tracks)
    index_bytes = catalog.library().table.landmark_count * KEY_BYTES
    embedding_bytes = sum(p.stat().st_size for p in catalog.config.embedding_dir.iterdir()
                          if p.suffix in (".ann", ".npy", ".npz"))
    return (f"catalog: {real_count} tracks ({len(tracks) - real_count} distractors), "
            f"{seconds / 3600:.1f} h, {catalog.library().table.landmark_count} landmarks, "
            f"index {index_bytes / 1e6:.1f} MB = {index_bytes / seconds:.0f} bytes/s of audio; "
            f"embedding indexes {embedding_bytes / 1e6:.1f} MB = "
            f"{embedding_bytes / seconds:.0f} bytes/s ({catalog.library().index.window_count} windows)")


def _ingest_summary(stats: dict) -> str:
    audio_s, cpu_s = stats["audio_s"], stats["cpu_s"]
    embedding_s = stats.get("embedding_cpu_s", 0.0)
    return (f"ingest: {audio_s / cpu_s:.0f}x real time per CPU core "
            f"(decode included; {audio_s / stats['wall_s']:.0f}x wall), "
            f"{stats['tracks']} tracks, {stats['skipped']} skipped; by stage: "
            f"decode + fingerprint {audio_s / max(cpu_s - embedding_s, 1e-9):.0f}x, "
            f"embedding {audio_s / max(embedding_s, 1e-9):.0f}x")


def _embedding_cost(clip_jobs: list[dict], config: Config) -> str:
    """Model load time, and the time to embed 10 s clips with the configured thread count."""
    started = time.perf_counter()
    Model()
    load_s = time.perf_counter() - started
    times = []
    for q in clip_jobs:
        samples = decode_query(q["file"], config)
        started = time.perf_counter()
        serving_model(config).windows(samples, hop_s=fusion.QUERY_HOP_S)
        times.append((time.perf_counter() - started) * 1000)
    return (f"model: load {load_s * 1000:.0f} ms; embedding a 10 s clip ({len(times)} clips, "
            f"{torch.get_num_threads()} thread): p50 {np.percentile(times or [0], 50):.1f} ms, "
            f"p95 {np.percentile(times or [0], 95):.1f} ms")


def _proc_status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out
