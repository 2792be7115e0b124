"""Make a clean clip sound like a phone held up in a room: speed error, reverb, band limit,
noise, then Opus as a browser would send it. `ear eval` applies fixed levels (`LEVELS`),
`ear train` random strengths (`random_room`); the tests use both.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48000  # what a browser records at
_FIRST_REFLECTION_S = 0.005
_BABBLE_TEXT = [
    "I told him we would meet at the station after lunch, but the train was late again.",
    "Could you pass me the menu? I think they changed the specials since last week.",
    "The weather has been strange all month, rain in the morning and sun by the evening.",
    "She said the concert was sold out, so we will probably watch it online instead.",
    "Do you remember where we parked? I am sure it was somewhere near the bakery.",
    "They are building a new bridge across the river and the traffic is terrible.",
]
_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en+m3", "en+f4"]
# Recorded game sound effects (applause, crowds, machines) from Debian packages, when installed.
_AMBIENCE_DIRS = ("/usr/share/games/frozen-bubble/snd", "/usr/share/hyperrogue/sounds")


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


def reverb(x: np.ndarray, rt60_s: float, wet: float, rng: np.random.Generator,
           rate: int = RATE) -> np.ndarray:
    """Convolve with a synthetic room: exponentially decaying noise after the direct sound."""
    if rt60_s <= 0 or wet <= 0:
        return x
    n = int(rt60_s * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # -60 dB at rt60
    tail[: int(_FIRST_REFLECTION_S * rate)] = 0
    tail *= np.sqrt(wet / np.sum(tail ** 2))
    ir = tail
    ir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(x.size + n)))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    return y.astype(np.float32)


def band_limit(x: np.ndarray, low: float, high: float, rate: int = RATE) -> np.ndarray:
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
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
    _opus(x, RATE, kbps, "webm", str(path))


def opus_round_trip(x: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    """`x` as it comes out of an Opus encoder and decoder, at `rate`, as long as `x`."""
    with tempfile.NamedTemporaryFile(suffix=".ogg") as coded:
        _opus(x, rate, kbps, "ogg", coded.name)
        y = read_clip(Path(coded.name), 0, x.size / rate + 1, rate)
    return np.pad(y, (0, max(0, x.size - y.size)))[: x.size]


def _opus(x: np.ndarray, rate: int, kbps: int, container: str, target: str) -> None:
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak * 0.9 if peak > 1.0 else x
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(rate), "-ac", "1",
         "-i", "pipe:0", "-c:a", "libopus", "-b:a", f"{kbps}k", "-f", container, "-y", target],
        input=x.astype("<f4").tobytes(), check=True, timeout=600)


def read_clip(path: Path, start_s: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """`seconds` of a file from `start_s`, mono at `rate` (evaluation input, trusted files)."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start_s:.4f}", "-t", f"{seconds:.4f}",
         "-i", str(path), "-af", "pan=mono|c0=0.5*c0+0.5*c1" if _channels(path) > 1 else "anull",
         "-ar", str(rate), "-f", "f32le", "pipe:1"],
        capture_output=True, check=True, timeout=60 + seconds / 20)
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


def random_room(x: np.ndarray, noise: list[np.ndarray], rng: np.random.Generator, heavy: bool,
                rate: int) -> np.ndarray:
    """A room of random strength, for training: reverb, band limit, noise and gain, each
    applied by chance (`heavy`: what a query sounds like; else a light disturbance)."""
    if rng.random() < (0.8 if heavy else 0.3):
        x = reverb(x, rng.uniform(0.1, 1.2 if heavy else 0.5), rng.uniform(0.1, 1.2), rng, rate)
    if rng.random() < (0.7 if heavy else 0.3):
        x = band_limit(x, rng.uniform(50, 400), rng.uniform(3000, 8000), rate)
    if rng.random() < (0.9 if heavy else 0.5):
        bank = noise[rng.integers(len(noise))]
        start = int(rng.integers(0, bank.size - x.size))
        x = add_noise(x, bank[start:start + x.size], rng.uniform(-8, 20) if heavy else rng.uniform(10, 30))
    return (x * 10 ** (rng.uniform(-10, 6) / 20)).astype(np.float32)


def noise_bank(folder: Path, seed: int) -> dict[str, np.ndarray]:
    """Three kinds of room noise at RATE, made once into `folder`: speech babble (six
    espeak-ng voices), pink noise, and ambience (recorded sound effects, when installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    bank = {}
    rng = np.random.default_rng(seed)
    babble_path = folder / "babble.npy"
    if not babble_path.exists():
        voices = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, voice in enumerate(_VOICES):
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
        effects = [p for d in _AMBIENCE_DIRS for p in sorted(Path(d).glob("*.ogg")) if "zik" not in p.name]
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
