"""`ear train --from-catalog`: the learning loop. The serving model is fine-tuned on the owner's
own catalog (as `ear train` trains on other music) and on the clips ear heard and was sure
of, measured against the serving model on a held-out part of the catalog (learn_eval.py),
and kept as a new version (models.py). It serves only if it is better on both identification
and similarity; then every library is embedded again, as a job of `ear worker`.

Where the owner's tracks name their artist, the similarity loss treats windows of one artist's
tracks as alike (as windows of one track are): what "sounds like" should bring together.

A confirmed query is a kept clip (EAR_KEEP_QUERIES) whose answer the fingerprints gave beyond
doubt, or that a listener said was right: a real microphone in a real room hearing a known
track at a known offset, which the synthetic rooms of training only imitate. Such a clip and
the track's window at its offset are one more identification pair. ("It was …" corrections
name a track but no offset, so they are shown on the dashboard and not trained on.)

It runs beside the service: nice'd, on the worker's torch threads, from decoded audio
memory-mapped on disk, and resumable (rerun the same command after a stop).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile
import torch

from .. import models
from ..catalog import Catalog
from ..config import Config
from ..db import Feedback, LoggedQuery, Track, database
from ..decode import SAMPLE_RATE
from ..embed import DIM, Embedder
from ..errors import EarError
from ..libraries import OWNER
from ..reembed import follow
from ..runtime import configure_threads
from ..storage import locked
from .degrade import noise_bank
from .learn_eval import compare
from .train import (WINDOW, RealPairs, Schedule, fit, load_music, save_weights,
                    store_style_statistics, to_16k)

# A fingerprint answer this confident is taken as the truth: the confidence is the chance that
# the answer is right (match.confidence, fitted on `ear eval` runs), so one in a hundred at worst.
BEYOND_DOUBT = 0.99
HELD_OUT_SHARE = 0.2  # of the catalog's tracks, never trained on: the figures are measured on them
MIN_TRACKS = 20  # fewer, and neither the training nor the figures mean anything
MIN_HELD_OUT = 4


def add_arguments(p) -> None:
    p.add_argument("--from-catalog", action="store_true", required=True,
                   help="fine-tune the serving model on the owner's catalog and confirmed queries")
    p.add_argument("--work", help="folder for decoded audio, checkpoint, loss log and eval "
                                  "(default: DATA_DIR/models/training)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16, help="tracks (= windows) per step; its memory "
                   "at 1 thread: 8 → 315 MB, 16 → 364 MB, 32 → 542 MB (docs/learning.md)")
    p.add_argument("--lr", type=float, default=3e-4, help="lower than from scratch: it starts trained")
    p.add_argument("--clips-per-track", type=int, default=2,
                   help="held-out clips per track, length and noise level, for the figures")
    p.add_argument("--if-new", type=int, default=0, metavar="N",
                   help="do nothing unless N confirmed queries came in since the newest version "
                        "(what a schedule runs)")
    p.add_argument("--seed", type=int, default=1)


def run(config: Config, args) -> int:
    catalog = Catalog(config)
    confirmed = confirmed_queries(config)
    since = max((v.created for v in models.versions(config) if v.created), default="")
    fresh = [q for q in confirmed if q["created_at"] > since]
    if len(fresh) < args.if_new:
        print(f"{len(fresh)} confirmed queries since the newest version, fewer than "
              f"--if-new {args.if_new}: nothing to do")
        return 0
    os.nice(max(0, config.worker_nice))
    configure_threads(config.worker_torch_threads, config.torch_interop_threads)
    work = Path(args.work) if args.work else models.folder(config) / "training"
    work.mkdir(parents=True, exist_ok=True)
    with locked(work / ".lock", wait=False) as mine:
        if not mine:
            raise EarError("training_running", f"A round of training is running already (it holds "
                           f"{work / '.lock'}).", 409)
        return _round(config, catalog, confirmed, work, args)


def _round(config: Config, catalog: Catalog, confirmed: list[dict], work: Path, args) -> int:
    tracks = [(t, catalog.audio_path(t)) for t in catalog.library(OWNER).tracks()]
    tracks = [(t, path) for t, path in tracks if path is not None]
    if len(tracks) < MIN_TRACKS:
        raise EarError("too_few_tracks", f"{len(tracks)} tracks with audio in the owner's library: "
                       f"training needs at least {MIN_TRACKS}.")
    kept_apart = held_out([t for t, _ in tracks])
    base = models.serving(config)
    _start_over_unless_same(work, {"base": base, "tracks": sorted(t.id for t, _ in tracks)})
    audio = load_music(work / "music", [path for t, path in tracks if t.id not in kept_apart])
    by_track = {t.id: audio[str(path)] for t, path in tracks if str(path) in audio}
    if len(by_track) < args.batch:
        raise EarError("too_few_tracks", f"{len(by_track)} tracks to train on: fewer than --batch "
                       f"{args.batch}.")
    pairs = [q for q in confirmed if q["track_id"] in by_track]
    print(f"training {base} on {len(by_track)} tracks and {len(pairs)} confirmed queries; "
          f"{len(kept_apart)} tracks held out", flush=True)

    torch.manual_seed(args.seed)
    net = Embedder()
    net.load_state_dict({k: v.float() for k, v in
                         torch.load(models.path_of(config, base), weights_only=True)["weights"].items()})
    noise = [to_16k(v) for v in noise_bank(work / "noise", args.seed + 100).values()]
    schedule = Schedule(args.steps, args.batch, args.lr, args.seed, warm_up=max(1, args.steps // 10))
    step = fit(net, list(by_track.values()), noise, work, schedule,
               _real_pairs(pairs, by_track, max(1, args.batch // 4)),
               _artists([t for t, _ in tracks if t.id in by_track]))

    name, candidate = models.next_name(config), work / "candidate.pt"
    save_weights(net, f"ear-embed-{DIM}d-{name}-from-{base}-step{step}", ["the owner's catalog"], candidate)
    store_style_statistics(candidate, list(by_track.values()))
    scored = compare(config, work / "eval", {base: models.path_of(config, base), name: candidate},
                     tracks, kept_apart, args.clips_per_track, args.seed)
    better = is_better(scored[name], scored[base])
    models.add_version(config, name, candidate, {
        "trained_from": base, "steps": step, "tracks": len(by_track), "held_out": len(kept_apart),
        "queries": len(pairs), "eval": {"candidate": scored[name], "base": scored[base]}, "better": better})
    (work / "checkpoint.pt").unlink(missing_ok=True)  # the next round starts from the new serving model
    print(_report(name, base, scored))
    if better and models.serving(config) != base:  # the owner chose another meanwhile: theirs stands
        print(f"{name} is better than {base}, but {models.serving(config)} was chosen since: it stays")
    elif better:
        behind = follow(catalog, name)
        print(f"{name} is better on both: it serves; libraries to embed again (`ear worker`): "
              f"{', '.join(behind) or 'none'}")
    else:
        print(f"{name} is not better on both: {base} keeps serving (`ear models use {name}` to "
              "choose it anyway)")
    return 0


def held_out(tracks: list[Track]) -> set[int]:
    """The ids of the held-out share: drawn by a hash of each id, so that a track stays held out
    in every round (each model is measured on music it never trained on); in a small catalog,
    at least MIN_HELD_OUT of them all the same."""
    draw = sorted((int.from_bytes(hashlib.sha256(str(t.id).encode()).digest()[:4], "big"), t.id)
                  for t in tracks)
    return {tid for k, (number, tid) in enumerate(draw)
            if number < HELD_OUT_SHARE * 2 ** 32 or k < MIN_HELD_OUT}


def _artists(tracks: list[Track]) -> np.ndarray:
    """A number per track, the same for tracks of one artist: what "sounds like" should bring
    together (a track without an artist is alike only to itself)."""
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(t.artist or f"#{t.id}", len(numbers)) for t in tracks])


def is_better(candidate: dict, base: dict) -> bool:
    """Better on identification (mean top-5 over the noisy levels) and on similarity (mean
    precision@10 over artist and genre, where the catalog has those labels)."""
    def mean(figures: dict, keys: tuple[str, ...]) -> float | None:
        found = [figures[k] for k in keys if figures.get(k) is not None]
        return sum(found) / len(found) if found else None

    for keys in (("top5_hard", "top5_ultra"), ("p10_artist", "p10_genre")):
        mine, theirs = mean(candidate, keys), mean(base, keys)
        if mine is not None and theirs is not None and not mine > theirs:
            return False
    return mean(candidate, ("top5_hard", "top5_ultra")) is not None


def confirmed_queries(config: Config) -> list[dict]:
    """The owner's library's kept clips whose answer is taken as the truth: by the fingerprints
    beyond doubt, or by a listener's "right"."""
    said_right = Feedback.select(Feedback.query_id).where(Feedback.verdict == "right")
    with database.connection_context():
        rows = LoggedQuery.select().where(
            (LoggedQuery.library == OWNER) & (LoggedQuery.audio != "") & LoggedQuery.track_id.is_null(False)
            & (((LoggedQuery.evidence.contains("fingerprint")) & (LoggedQuery.confidence >= BEYOND_DOUBT))
               | LoggedQuery.query_id.in_(said_right)))
        return [{"clip": config.queries_dir / q.audio, "track_id": q.track_id, "offset_s": q.offset_s or 0.0,
                 "created_at": q.created_at.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")}
                for q in rows]


def _real_pairs(pairs: list[dict], by_track: dict, per_step: int) -> RealPairs | None:
    """Each step: `per_step` confirmed clips' 2 s windows, and the track's windows they heard
    (None: no clip to draw from)."""
    clips = []
    for q in pairs:
        try:
            heard, rate = soundfile.read(q["clip"], dtype="float32")
        except (OSError, RuntimeError):  # swept meanwhile
            continue
        if rate == SAMPLE_RATE and heard.ndim == 1 and heard.size >= WINDOW:
            clips.append((heard, by_track[q["track_id"]][0], int(q["offset_s"] * SAMPLE_RATE)))

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        clean, heard = [], []
        for k in rng.choice(len(clips), min(per_step, len(clips)), replace=False):
            clip, track, offset = clips[k]
            t = int(rng.integers(0, clip.size - WINDOW + 1))
            at = min(max(0, offset + t), track.size - WINDOW)
            clean.append(track[at:at + WINDOW].astype(np.float32) / 32767)
            heard.append(clip[t:t + WINDOW])
        return np.stack(clean), np.stack(heard)

    return draw if clips else None


def _start_over_unless_same(work: Path, plan: dict) -> None:
    """A checkpoint resumes only the round it was made in: the same base model and catalog."""
    path = work / "plan.json"
    if path.exists() and json.loads(path.read_text()) != plan:
        (work / "checkpoint.pt").unlink(missing_ok=True)
        (work / "loss.csv").unlink(missing_ok=True)
        shutil.rmtree(work / "eval", ignore_errors=True)
    path.write_text(json.dumps(plan))


def _report(name: str, base: str, scored: dict[str, dict]) -> str:
    lines = [f"held-out figures ({scored[name].get('queries', 0)} clips of "
             f"{scored[name].get('tracks', 0)} tracks):", f"{'':22} {base:>9} {name:>9}"]
    for key, label in models.FIGURE_LABELS.items():
        if scored[base].get(key) is not None:
            lines.append(f"{label:22} {scored[base][key]:9.1f} {scored[name][key]:9.1f}")
    return "\n".join(lines)
