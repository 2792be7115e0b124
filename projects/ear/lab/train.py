"""`ear train`: contrastive training of the embedder on the CPU, resumable from checkpoints.

Each step draws one 2 s window from each of `batch` different tracks and makes three views:
the clean window (what the index stores), the same window as a room microphone would hear it
(reverb, band limit, noise, Opus, gain, ±2 % speed, up to ±0.5 s misaligned: what a query
looks like), and another window of the same track, lightly disturbed. Two NT-Xent losses:
clean ↔ degraded teaches identification, clean ↔ other window teaches "sounds like".
"""
from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..decode import SAMPLE_RATE
from ..embed import DIM, MODEL_PATH, Embedder, LogMel, Model, WINDOW_S
from ..ingest import audio_files
from ..storage import replacing
from .degrade import noise_bank, opus_round_trip, random_room, read_clip

WINDOW = int(WINDOW_S * SAMPLE_RATE)
CONTEXT = int(1.2 * SAMPLE_RATE)  # audio before the window, for the reverb tail
JITTER = int(0.5 * SAMPLE_RATE)
_QUERY_OPUS_KBPS = 24  # the degraded view starts from an Opus-coded twin 70 % of the time


def add_arguments(p) -> None:
    p.add_argument("--music", action="append", required=True, metavar="DIR",
                   help="folder of training music (repeatable); keep it apart from eval catalogs")
    p.add_argument("--work", required=True, help="folder for decoded audio, checkpoints, loss log")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=64, help="tracks (= windows) per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="where to write the final weights "
                   "(default: the package's model file)")
    p.add_argument("--style-only", action="store_true",
                   help="do not train: measure the style statistics' spread over --music for "
                        "the weights already in --out (done at the end of every training)")


def run(args) -> int:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tracks = list(load_music(work / "music", list(audio_files(args.music))).values())
    out = Path(args.out) if args.out else MODEL_PATH
    if args.style_only:
        store_style_statistics(out, tracks)
        return 0
    if len(tracks) < args.batch:
        raise SystemExit(f"{len(tracks)} tracks: need at least --batch {args.batch}")
    noise = [to_16k(v) for v in noise_bank(work / "noise", args.seed + 100).values()]
    print(f"training on {len(tracks)} tracks, "
          f"{sum(t[0].size for t in tracks) / SAMPLE_RATE / 3600:.1f} h", flush=True)

    torch.manual_seed(args.seed)
    net = Embedder()
    step = fit(net, tracks, noise, work, Schedule(args.steps, args.batch, args.lr, args.seed))
    save_weights(net, f"ear-embed-{DIM}d-step{step}", args.music, out)
    store_style_statistics(out, tracks)
    print(f"weights: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch: int  # tracks (= windows) per step
    lr: float  # the peak, reached after `warm_up` steps, then cosine decay
    seed: int
    warm_up: int = 300


# (clean windows, the same windows as ear heard them) from real queries, for one step
RealPairs = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def fit(net: Embedder, tracks: list[tuple[np.ndarray, np.ndarray]], noise: list[np.ndarray],
        work: Path, schedule: Schedule, real: RealPairs | None = None,
        kinds: np.ndarray | None = None) -> int:
    """Train `net` to `schedule.steps` (resuming from `work`/checkpoint.pt, saved every 250
    steps), logging the losses to `work`/loss.csv; `real` adds pairs of real queries to each
    step's identification loss; `kinds` (a number per track, e.g. its artist) makes windows of
    tracks of one kind alike in the similarity loss, as windows of one track are. Returns the
    step reached."""
    frontend = LogMel()
    opt = torch.optim.AdamW(net.parameters(), lr=schedule.lr, weight_decay=1e-4)
    step, checkpoint = 0, work / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        print(f"resuming at step {step}", flush=True)
    rng = np.random.default_rng(schedule.seed + step)
    started, running = time.perf_counter(), []
    net.train()
    with (work / "loss.csv").open("a") as log:
        while step < schedule.steps:
            for group in opt.param_groups:
                group["lr"] = schedule.lr * min(1.0, (step + 1) / schedule.warm_up) * 0.5 * (
                    1 + math.cos(math.pi * step / schedule.steps))
            clean, degraded, other, chosen = _views(tracks, noise, schedule.batch, rng)
            if real is not None:
                real_clean, real_heard = real(rng)
                clean, degraded = np.concatenate([clean, real_clean]), np.concatenate([degraded, real_heard])
            identify_loss, similar_loss, hit = _losses(
                net, frontend(torch.from_numpy(np.concatenate([clean, degraded, other]))), len(other),
                None if kinds is None else torch.from_numpy(kinds[chosen][:, None] == kinds[chosen][None, :]))
            loss = identify_loss + 0.5 * similar_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            running.append((identify_loss.item(), similar_loss.item(), hit))
            if step % 50 == 0 or step == schedule.steps:
                i, sim, h = np.mean(running, axis=0)
                running.clear()
                log.write(f"{step},{i:.4f},{sim:.4f},{h:.3f}\n")
                log.flush()
                print(f"step {step}/{schedule.steps} identify {i:.3f} similar {sim:.3f} "
                      f"in-batch top-1 {h:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
            if step % 250 == 0 or step == schedule.steps:
                with replacing(checkpoint) as fh:
                    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, fh)
    net.eval()
    return step


def save_weights(net: Embedder, version: str, music: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    with replacing(out) as fh:  # a running ear never reads half a file
        torch.save({"weights": weights, "version": version,
                    "trained_on": sorted({str(Path(d)) for d in music})}, fh)


def store_style_statistics(path: Path, tracks: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Keep, in the model file, the mean and spread over the training tracks of each style
    statistic (`embed.Windows.statistics`): style vectors are standardised with them."""
    model = Model(path)
    stats = np.stack([model.scan([clean.astype(np.float32) / 32767.0], hop_s=2.0).statistics()
                      for clean, _ in tracks])
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["style_mean"] = torch.from_numpy(stats.mean(axis=0))
    state["style_std"] = torch.from_numpy(stats.std(axis=0) + 1e-6)
    with replacing(path) as fh:
        torch.save(state, fh)
    print(f"style statistics of {len(tracks)} tracks stored in {path}", flush=True)


def _losses(net: Embedder, logmel: torch.Tensor, n: int, alike: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(identification loss, similarity loss, in-batch top-1 of identification) of a step's
    views: clean, degraded (as many) and `n` others. Without `alike` the similarity loss is on
    the window vectors (two windows of one track alike); with it, on the windows' textures,
    standardised over the batch as style vectors are over tracks (embed.Model.style_vector):
    what "similar tracks" compares, made alike for the tracks `alike` marks."""
    vectors, textures = net.forward_with_texture(logmel)
    m = (len(vectors) - n) // 2
    a, b, c = vectors.split([m, m, n])
    identify_loss = _nt_xent(a, b, 0.05)
    if alike is None:
        similar_loss = _nt_xent(a[:n], c, 0.1)
    else:
        style = torch.cat([textures[:n], textures[2 * m:]])
        style = torch.nn.functional.normalize((style - style.mean(dim=0)) / (style.std(dim=0) + 1e-6), dim=1)
        similar_loss = _nt_xent(style[:n], style[n:], 0.1, alike)
    with torch.no_grad():
        hit = (a @ b.T).argmax(dim=1).eq(torch.arange(m)).float().mean().item()
    return identify_loss, similar_loss, hit


def _nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float,
             alike: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent: a[i]'s match is b[i]; with `alike` (booleans, (n, n)), every b[j] it marks for
    a[i] is one (the supervised contrastive loss of Khosla et al. 2020, its mean over them)."""
    logits = a @ b.T / temperature
    if alike is None:
        target = torch.arange(a.shape[0])
        return 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
    weights = alike.float() / alike.float().sum(dim=1, keepdim=True)  # `alike` is symmetric
    return -0.5 * ((logits.log_softmax(dim=1) * weights).sum(dim=1).mean()
                   + (logits.T.log_softmax(dim=1) * weights).sum(dim=1).mean())


# ---- data ------------------------------------------------------------------------------------
def load_music(folder: Path, files: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{file: its audio at 16 kHz, and an Opus-coded twin}, decoded once into `folder` (int16,
    memory-mapped); files that cannot be decoded, are shorter than 20 s or near silent are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "tracks.json"
    names = json.loads(listing.read_text()) if listing.exists() else {}
    for path in files:
        key = str(path)
        if key in names:
            continue
        try:
            x = read_clip(path, 0, 3 * 3600, rate=SAMPLE_RATE)
        except subprocess.CalledProcessError:
            print(f"skipped (cannot decode): {path}")
            continue
        if x.size < 20 * SAMPLE_RATE:
            continue
        stem = f"{len(names):04d}"
        np.save(folder / f"{stem}.npy", _int16(x))
        np.save(folder / f"{stem}-opus.npy", _int16(opus_round_trip(x, SAMPLE_RATE, _QUERY_OPUS_KBPS)))
        names[key] = stem
        listing.write_text(json.dumps(names, indent=1))
        print(f"decoded {path}", flush=True)
    wanted = {str(p) for p in files}
    tracks = {key: (np.load(folder / f"{stem}.npy", mmap_mode="r"),
                    np.load(folder / f"{stem}-opus.npy", mmap_mode="r"))
              for key, stem in sorted(names.items()) if key in wanted}
    # Some module files render to near silence; they would only stall the window sampler.
    return {key: t for key, t in tracks.items() if np.sqrt(np.mean(np.square(t[0][::97] / 32767.0))) > 0.01}


def _int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def to_16k(x: np.ndarray) -> np.ndarray:
    """48 kHz noise → 16 kHz (averaging three samples is low-pass enough for noise)."""
    n = x.size // 3 * 3
    return x[:n].reshape(-1, 3).mean(axis=1).astype(np.float32)


def _views(tracks, noise, batch: int, rng: np.random.Generator):
    chosen = rng.choice(len(tracks), batch, replace=False)
    clean, degraded, other = [], [], []
    for k in chosen:
        audio, opus = tracks[k]
        for _ in range(20):  # a silent window teaches nothing: look for a sounding one
            t = int(rng.integers(CONTEXT + JITTER, audio.size - WINDOW - JITTER))
            window = audio[t:t + WINDOW].astype(np.float32) / 32767
            if np.sqrt(np.mean(window ** 2)) > 0.003:
                break
        clean.append(window)
        source = opus if rng.random() < 0.7 else audio
        speed = 1 + rng.uniform(-0.02, 0.02)
        start = t + int(rng.integers(-JITTER, JITTER + 1)) - CONTEXT
        span = int((WINDOW + CONTEXT) * speed) + 2
        x = source[start:start + span].astype(np.float32) / 32767
        x = np.interp(np.arange(WINDOW + CONTEXT) * speed, np.arange(x.size), x)
        degraded.append(random_room(x, noise, rng, True, SAMPLE_RATE)[CONTEXT:])
        u = int(rng.integers(CONTEXT, audio.size - WINDOW))
        if abs(u - t) < 2 * WINDOW:
            u = (t + audio.size // 2) % (audio.size - WINDOW - CONTEXT) + CONTEXT
        x = audio[u - CONTEXT:u + WINDOW].astype(np.float32) / 32767
        other.append(random_room(x, noise, rng, False, SAMPLE_RATE)[CONTEXT:])
    return (np.stack(clean), np.stack(degraded).astype(np.float32),
            np.stack(other).astype(np.float32), chosen)
