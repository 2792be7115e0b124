"""Audio → log spectrogram → spectral peaks (the event points that landmarks are made of)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import numpy as np
import torch

from .decode import SAMPLE_RATE

N_FFT = 512  # 32 ms
HOP = 256  # 16 ms: offsets land within ±8 ms of the truth
FRAME_SECONDS = HOP / SAMPLE_RATE
F_MIN_BIN = 4  # 125 Hz: below it is room rumble and the 100 Hz band limit of phone mics
F_MAX_BIN = 160  # 5 kHz: above it peaks rarely survive noise, reverb and Opus
_LEVEL_RADIUS = 62  # frames: ±1 s
_RANK_RADIUS = 31  # frames: ±0.5 s
_RANK_CHUNK = 2048  # peaks ranked at a time: ~10 MB of index arrays, not ~40
BLOCK_FRAMES = 3750  # 60 s: a few MB of spectrogram at a time
MARGIN_FRAMES = 128  # ≥ level + rank + time radius (peaks), ≥ an embedding window (embed.py)
_FLOOR = float(np.log(1e-3))  # log magnitude of a tone near -80 dBFS: below it, nothing to hear
_WINDOW = torch.hann_window(N_FFT, periodic=False)  # numpy's hanning


@dataclass(frozen=True)
class PeakDensity:
    """How many peaks to keep: more for a short noisy query than for a stored track."""

    per_second: float
    freq_radius: int
    time_radius: int


# Stored tracks keep 24 peaks/s to verify candidates with; the strongest LANDMARK_PEAKS of
# them make the landmarks. A query keeps 30 peaks/s for both.
TRACK_PEAKS = PeakDensity(per_second=24.0, freq_radius=4, time_radius=3)
QUERY_PEAKS = PeakDensity(per_second=30.0, freq_radius=4, time_radius=3)
DENSE_QUERY_PEAKS = PeakDensity(per_second=40.0, freq_radius=4, time_radius=3)  # when unsure
LANDMARK_PEAKS = 10


def power_spectrum(samples: torch.Tensor) -> torch.Tensor:
    """|STFT|² of samples (..., n): shape (..., N_FFT // 2 + 1, frames), float32. The one STFT
    of a block, shared by its peaks (`spectrogram`) and the embedder's log-mel (embed.LogMel)."""
    # torch's FFT: float32 and 3-4x faster than numpy's here (torch is loaded anyway).
    return squared_magnitude(torch.stft(samples, N_FFT, HOP, window=_WINDOW, center=False,
                                        return_complex=True))


def squared_magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|z|² of a complex tensor, float32. A complex abs() costs more than the FFT itself; the
    real and imaginary parts squared in one pass over their interleaved floats, then added,
    take half the time of squaring each strided part apart (docs/speed.md)."""
    parts = torch.view_as_real(spec).square()
    return parts[..., 0] + parts[..., 1]


def spectrogram(power: torch.Tensor) -> np.ndarray:
    """Log-magnitude spectrum of the bins up to F_MAX_BIN from `power_spectrum`, shape
    (frames, F_MAX_BIN), float32."""
    return torch.log(power[:F_MAX_BIN].sqrt() + 1e-6).T.contiguous().numpy()


def running_max(x: np.ndarray, radius: int, axis: int = 0) -> np.ndarray:
    """max(x[i − radius : i + radius + 1]) along `axis` for every i (the edges see fewer), by
    doubling window widths: O(n log radius) in vectorised steps."""
    if radius <= 0:
        return x
    x = np.moveaxis(x, axis, 0)
    width = 2 * radius + 1
    pad = np.full((radius,) + x.shape[1:], -np.inf, x.dtype)
    out = np.concatenate([pad, x, pad])
    span = 1  # out[i] = max(padded x[i : i + span])
    while span * 2 <= width:
        out[:-span] = np.maximum(out[:-span], out[span:])
        span *= 2
    if span < width:  # cover the rest with one overlapping step
        rest = width - span
        out[:-rest] = np.maximum(out[:-rest], out[rest:])
    return np.moveaxis(out[: x.shape[0]], 0, axis)


def _running_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over ±radius frames (fewer at the edges), per bin."""
    csum = np.concatenate([np.zeros((1, x.shape[1]), np.float64), np.cumsum(x, axis=0)])
    idx = np.arange(x.shape[0])
    lo = np.clip(idx - radius, 0, x.shape[0])
    hi = np.clip(idx + radius + 1, 0, x.shape[0])
    return ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """A stretch of audio cut for frame-based analysis: its own frames [first, stop), and the
    samples from frame `begin` up to `MARGIN_FRAMES` past `stop` (fewer at the ends), so that
    anything computed within MARGIN_FRAMES of a frame sees what a pass over the whole would."""

    samples: np.ndarray  # from the first sample of frame `begin`
    begin: int
    first: int
    stop: int

    @cached_property
    def power(self) -> torch.Tensor:
        """`power_spectrum` of the samples: frame `begin` on, computed once for every chain."""
        return power_spectrum(torch.from_numpy(np.ascontiguousarray(self.samples, dtype=np.float32)))


def blocks(parts: Iterable[np.ndarray]) -> Iterator[Block]:
    """Cut audio arriving in parts of any size into Blocks of BLOCK_FRAMES frames (60 s), held
    one at a time: what an hours-long track costs in memory is one block."""
    waiting: list[np.ndarray] = []  # samples from frame `held_from` on, joined once per block
    waiting_size = 0
    held_from = 0  # the frame of the first waiting sample: `first - MARGIN_FRAMES` (or 0)
    first = 0
    for part in parts:
        waiting.append(part)
        waiting_size += part.size
        if _frames_in(waiting_size) < first + BLOCK_FRAMES + MARGIN_FRAMES - held_from:
            continue
        held = np.concatenate(waiting)
        while _frames_in(held.size) >= first + BLOCK_FRAMES + MARGIN_FRAMES - held_from:
            yield _cut(held, held_from, first, first + BLOCK_FRAMES)
            first += BLOCK_FRAMES
            keep_from = first - MARGIN_FRAMES
            held, held_from = held[(keep_from - held_from) * HOP:], keep_from
        waiting, waiting_size = [held], held.size
    held = np.concatenate(waiting) if waiting else np.zeros(0, np.float32)
    total = held_from + _frames_in(held.size)
    if held.size < N_FFT:  # a clip shorter than one frame still makes one (zero-padded)
        held = np.pad(held, (0, N_FFT - held.size))
    while first < total:
        yield _cut(held, held_from, first, min(first + BLOCK_FRAMES, total))
        first += BLOCK_FRAMES


def _frames_in(n_samples: int) -> int:
    return max(1, 1 + (n_samples - N_FFT) // HOP)


def _cut(held: np.ndarray, held_from: int, first: int, stop: int) -> Block:
    begin = max(held_from, first - MARGIN_FRAMES)
    end = min(held_from + _frames_in(held.size), stop + MARGIN_FRAMES)
    return Block(held[(begin - held_from) * HOP:(end - 1 - held_from) * HOP + N_FFT], begin, first, stop)


def peaks(samples: np.ndarray, density: PeakDensity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectral peaks as (frame, bin, rank) int32 arrays, sorted by frame (see `_block_peaks`).

    `rank` counts the stronger peaks within ±0.5 s: `rank < k` selects a sparser set."""
    found = [block_peaks(block, density) for block in blocks([samples])]
    return tuple(np.concatenate(column) for column in zip(*found))


def block_peaks(block: Block, density: PeakDensity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`peaks` of the block's own frames (the margins make them those of the whole)."""
    t, f, r = _block_peaks(block.power, density)
    t += block.begin
    own = (t >= block.first) & (t < block.stop)
    return t[own], f[own], r[own]


def _block_peaks(power: torch.Tensor, density: PeakDensity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectral peaks as (frame, bin) int32 arrays, sorted by frame.

    Everything here is local in time, so a clip yields the same peaks as the same stretch of
    the whole track (but for its edges): a peak is the maximum of its neighbourhood and above
    the mean level over ±1 s; of those, a peak is kept when fewer than `per_second` stronger
    ones lie within ±0.5 s of it. The spectrum is not whitened: in a noisy room the quiet bins
    drown, and whitened they would offer as many (noise) peaks as the loud bins where the
    music still stands out.
    """
    spec = spectrogram(power)
    audible = spec > _FLOOR
    spec -= _running_mean(spec.mean(axis=1, keepdims=True), _LEVEL_RADIUS)
    local_max = running_max(running_max(spec, density.freq_radius, 1), density.time_radius, 0)
    is_peak = (spec == local_max) & (spec > 0) & audible
    # A plateau (digital silence, a clipped tone) is no peak: ask for a drop on both sides.
    is_peak[:, 1:-1] &= (spec[:, 1:-1] > spec[:, :-2]) & (spec[:, 1:-1] > spec[:, 2:])
    is_peak[:, :F_MIN_BIN] = False
    t, f = np.nonzero(is_peak)
    strength = spec[t, f]
    lo = np.searchsorted(t, t - _RANK_RADIUS, side="left")
    hi = np.searchsorted(t, t + _RANK_RADIUS, side="right")
    rank = np.zeros(t.size, np.int64)
    for start in range(0, t.size, _RANK_CHUNK):  # in chunks: a long track must not cost GBs
        sl = slice(start, start + _RANK_CHUNK)
        width = int((hi[sl] - lo[sl]).max())
        window = lo[sl, None] + np.arange(width, dtype=np.int64)[None, :]
        inside = window < hi[sl, None]
        np.minimum(window, t.size - 1, out=window)
        stronger = ((strength[window] > strength[sl, None]) & inside).sum(axis=1)
        rank[sl] = stronger
    keep = rank < density.per_second
    return t[keep].astype(np.int32), f[keep].astype(np.int32), rank[keep].astype(np.int32)
