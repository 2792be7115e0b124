"""Music-like test audio made with numpy: chords, a melody and drums, different for every seed,
never repeating a bar (so that every offset in a track is unambiguous)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    harmonics = sum((0.6 ** k) * np.sin(2 * np.pi * freq * (k + 1) * t + rng.uniform(0, 6.28))
                    for k in range(5))
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.5, 4.0))
    return harmonics * envelope


def song(seed: int, seconds: float = 30.0, channels: int = 2) -> np.ndarray:
    """A float32 array (samples, channels) at RATE."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(90, 140)
    root = rng.uniform(110, 220)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    pos = 0.0
    while pos < seconds:
        start = int(pos * RATE)
        chord_root = root * 2 ** (rng.choice(scale[:7]) / 12)
        for interval in (0, 4, 7):  # a triad held for a bar
            note = _tone(chord_root * 2 ** (interval / 12), 4 * beat, rng) * 0.25
            out[start:start + note.size] += note[: n - start]
        for step in range(8):  # eighth-note melody
            at = int((pos + step * beat / 2) * RATE)
            if at >= n or rng.random() < 0.2:
                continue
            note = _tone(root * 4 * 2 ** (rng.choice(scale) / 12), beat / 2, rng) * 0.35
            out[at:at + note.size] += note[: n - at]
        for step in range(4):  # kick on the beat, noisy snare on 2 and 4
            at = int((pos + step * beat) * RATE)
            if at >= n:
                continue
            length = min(int(0.15 * RATE), n - at)
            t = np.arange(length) / RATE
            if step % 2:
                hit = rng.standard_normal(length) * np.exp(-t * 30) * 0.3
            else:
                hit = np.sin(2 * np.pi * 60 * t * (1 + 2 * np.exp(-t * 40))) * np.exp(-t * 20) * 0.6
            out[at:at + length] += hit
        pos += 4 * beat
    out = out / np.max(np.abs(out)) * 0.8
    return np.repeat(out[:, None], channels, axis=1).astype(np.float32)


def write(path: Path, audio: np.ndarray) -> Path:
    sf.write(path, audio, RATE)
    return path


def encode(src: Path, dst: Path, *args: str) -> Path:
    """Convert with FFmpeg (codec options in `args`)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True)
    return dst
