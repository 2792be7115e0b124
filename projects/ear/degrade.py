"""Make a clean clip sound like a phone held up in a room: speed error, reverb, band limit,
noise, then Opus in WebM as a browser would send it. Used by `ear eval` and the tests."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48000  # what a browser records at


@dataclass(frozen=True)
class Level:
    name: str
    rt60_s: float  # reverberation time; 0: none
    wet: float  # reverberant energy relative to the direct sound
    band: tuple[float, float] | None  # pass band in Hz
    snr_db: float | None
    speed_error: float  # |playback speed − 1| applied to every other clip
    opus_kbps: int = 32


LEVELS = {
    "CLEAN": Level("CLEAN", 0.0, 0.0, None, None, 0.0),
    "SOFT": Level("SOFT", 0.3, 0.3, (100.0, 7000.0), 15.0, 0.0),
    "HARD": Level("HARD", 0.6, 0.6, (100.0, 7000.0), 5.0, 0.0),
    "ULTRA": Level("ULTRA", 1.0, 1.0, (100.0, 7000.0), -5.0, 0.01),
}


def resample(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (pitch moves too), by linear interpolation."""
    n = int(round(x.size / factor))
    return np.interp(np.arange(n) * factor, np.arange(x.size), x).astype(np.float32)


def reverb(x: np.ndarray, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: exponentially decaying noise after the direct sound."""
    if rt60_s <= 0 or wet <= 0:
        return x
    n = int(rt60_s * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # -60 dB at rt60
    tail[: int(0.005 * RATE)] = 0  # the first reflections arrive after ~5 ms
    tail *= np.sqrt(wet / np.sum(tail ** 2))
    ir = tail
    ir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(x.size + n)))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    return y.astype(np.float32)


def band_limit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    spec[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spec, x.size).astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, x.size)
    gain = np.sqrt(np.mean(x ** 2) / max(np.mean(noise ** 2), 1e-12) / 10 ** (snr_db / 10))
    return (x + gain * noise).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1
    return np.fft.irfft(spec / np.sqrt(f), n).astype(np.float32)


def encode_opus_webm(x: np.ndarray, path: Path, kbps: int) -> None:
    """Encode mono 48 kHz float samples as Opus in WebM (what MediaRecorder sends)."""
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak * 0.9 if peak > 1.0 else x
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1",
         "-i", "pipe:0", "-c:a", "libopus", "-b:a", f"{kbps}k", "-f", "webm", "-y", str(path)],
        input=x.astype("<f4").tobytes(), check=True, timeout=60)


def read_clip(path: Path, start_s: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """`seconds` of a file from `start_s`, mono at `rate` (evaluation input, trusted files)."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start_s:.4f}", "-t", f"{seconds:.4f}",
         "-i", str(path), "-af", "pan=mono|c0=0.5*c0+0.5*c1" if _channels(path) > 1 else "anull",
         "-ar", str(rate), "-f", "f32le", "pipe:1"],
        capture_output=True, check=True, timeout=60)
    return np.frombuffer(out.stdout, "<f4").copy()


def _channels(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=channels", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip().split(",")[0] or 1)


def degrade(clip: np.ndarray, level: Level, noise: np.ndarray | None,
            rng: np.random.Generator) -> np.ndarray:
    """Apply a level's room, band and noise to a 48 kHz clip (speed is applied when cutting)."""
    x = reverb(clip, level.rt60_s, level.wet, rng)
    if level.band:
        x = band_limit(x, *level.band)
    if level.snr_db is not None and noise is not None:
        start = rng.integers(0, max(1, noise.size - x.size))
        x = add_noise(x, noise[start:], level.snr_db)
    return x
