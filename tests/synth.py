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


def video(path: Path, sound: np.ndarray, codec: list[str]) -> Path:
    """A video of FFmpeg's moving test pattern (its clock drawn in the picture, 320×240 at 10
    frames a second) with `sound` as its sound, as long as the sound."""
    wav = write(path.with_suffix(".sound.wav"), sound)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=320x240:rate=10:duration={len(sound) / RATE:.3f}", "-i", str(wav),
                    "-map", "0:v", "-map", "1:a", *codec, "-shortest", str(path)], check=True)
    wav.unlink()
    return path


def speech(folder: Path) -> Path:
    """A folder holding a long spoken text (espeak-ng): audio that no catalog of songs holds."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-w", str(folder / "speech.wav"), 3 * (
        "Nothing in the catalog sounds like this voice, which goes on reading aloud for a good "
        "while, sentence after sentence, so that a clip can be cut from the middle of it. ")],
        check=True)
    return folder


def tune(seed: int, notes: int = 48) -> list[tuple[float, float, int]]:
    """A melody for query by humming: (start, length) in beats and a MIDI pitch per note, steps
    and small leaps on a major scale, different for every seed."""
    rng = np.random.default_rng(1000 + seed)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    degree, at, out = 7, 0.0, []
    for _ in range(notes):
        degree = int(np.clip(degree + rng.choice([-3, -2, -1, 1, 1, 2, 3]), 0, 16))
        length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        out.append((at, length, 60 + 12 * (degree // 7) + int(scale[degree % 7])))
        at += length
    return out


def _voice(midi: np.ndarray, rng: np.random.Generator, harmonics: int, vibrato: float) -> np.ndarray:
    """A harmonic sound following a pitch curve given per sample (NaN: silence)."""
    t = np.arange(midi.size) / RATE
    hz = 440 * 2 ** ((np.nan_to_num(midi, nan=60.0) - 69) / 12) * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(hz) / RATE
    sound = sum(0.7 ** k * np.sin((k + 1) * phase + rng.uniform(0, 6.28)) for k in range(harmonics))
    on = (~np.isnan(midi)).astype(float)
    return sound * np.convolve(on, np.ones(441) / 441, mode="same")  # 10 ms attack and release


def beat(melody: list[tuple[float, float, int]], bpm: float, seed: int) -> np.ndarray:
    """A mono float32 beat at RATE: the melody's lead over held triads and a kick and snare,
    after a bar of intro."""
    rng = np.random.default_rng(seed)
    spb = 60.0 / bpm
    n = int((melody[-1][0] + melody[-1][1] + 8) * spb * RATE)
    lead = np.full(n, np.nan)
    for start, length, pitch in melody:
        a = int((start + 4) * spb * RATE)
        lead[a:a + int(length * spb * RATE * 0.9)] = pitch
    out = _voice(lead, rng, 6, 0.0) * 0.3
    for bar in range(int(n / RATE / spb / 4) + 1):
        at = int(bar * 4 * spb * RATE)
        root = 48 + int(rng.choice([0, 5, 7, 9]))
        for interval in (0, 4, 7):
            note = _tone(440 * 2 ** ((root + interval - 69) / 12), 4 * spb, rng) * 0.12
            out[at:at + note.size] += note[: n - at]
        for step in range(4):
            hit = int(at + step * spb * RATE)
            length = min(int(0.1 * RATE), n - hit)
            if length > 0:
                out[hit:hit + length] += rng.standard_normal(length) * np.exp(-np.arange(length) / 800) * 0.2
    return (out / np.max(np.abs(out)) * 0.8).astype(np.float32)


def hummed(melody: list[tuple[float, float, int]], first: int, count: int, bpm: float,
           transpose: int, seed: int) -> np.ndarray:
    """A mono float32 hum at RATE of `count` notes from note `first`, transposed, at `bpm`:
    a voice with vibrato, notes a little off pitch, breaths between notes, some breath noise."""
    rng = np.random.default_rng(seed)
    spb = 60.0 / bpm
    notes = melody[first:first + count]
    offset = notes[0][0]
    n = int((notes[-1][0] + notes[-1][1] - offset + 0.5) * spb * RATE)
    curve = np.full(n, np.nan)
    for start, length, pitch in notes:
        a = int((start - offset) * spb * RATE)
        curve[a:a + int(length * spb * RATE * 0.85)] = pitch + transpose + rng.uniform(-0.3, 0.3)
    out = _voice(curve, rng, 4, 0.006) * 0.5 + rng.standard_normal(n) * 0.01
    return out.astype(np.float32)
