"""Query-by-humming benchmark data: hummed queries of melodies, and (re-exported from `hum_beats`) the beats
they are asked against. `hum(melody, level, rng, noise=...)` sings an excerpt of a melody (from a random note,
5-20 s of hum) as a browser records it, 48 kHz float32 through a room and Opus, and returns the truth (which
excerpt, tempo, transposition). Deterministic given the generator.

Faithful how: the singer is a source-filter voice: harmonics falling 12 dB an octave from the glottis, rising
6 from the lips, through the formants of "oo", "ah", "oh" or a nasal "mm", with breath noise and intakes, soft
attacks and breath gaps. It sings in any key (-7..+7 semitones, then whole octaves into a male or a female
range) at 0.7-1.4 times the beat's tempo, with a hummer's errors drawn at a level's strength, then stands in
`degrade`'s room and goes through Opus at 32 kb/s:

| HumLevel       | easy       | moderate   | hard        | what                                                  |
| detune_cents   | 10         | 25         | 40          | sd of each note's pitch error, cut at 50 cents        |
| drift_cents    | 10         | 30         | 60          | sd of the pitch drift from the first note to the last |
| wobble_cents   | 3          | 8          | 15          | sd of a slow (< 5 Hz) wander within notes             |
| vibrato_cents  | 15         | 30         | 60          | depth of a 5-6 Hz vibrato on held notes               |
| slide_prob, _s | 0.2, 40 ms | 0.5, 80 ms | 0.8, 150 ms | notes entered by a slide or a scoop from below        |
| wrong_rate     | 0          | 0.05       | 0.15        | notes sung 1 or 2 semitones off                       |
| missing_rate   | 0          | 0.05       | 0.12        | notes left out                                        |
| extra_rate     | 0          | 0.03       | 0.08        | notes split in two (a repeat or a neighbour)          |
| speed          | 0.9-1.1    | 0.8-1.25   | 0.7-1.4     | hum tempo / beat tempo                                |
| jitter         | 0.04       | 0.10       | 0.20        | sd of the log of each inter-onset interval's ratio    |
| room           | CLEAN      | SOFT       | HARD        | `degrade.LEVELS`: quiet, a living room, noisy         |
| breath_db      | -40        | -30        | -22         | breath noise relative to the voice                    |

"moderate" is an amateur in a living room; "easy" a steady singer in a quiet one, so that it measures the
voice's errors alone; "hard" a poor singer in a noisy one. Every level sings in any key.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .degrade import LEVELS, RATE, degrade, encode_opus_webm, opus_round_trip
from .hum_beats import Beat, Note, make_beats, unknown_melodies

__all__ = ["Beat", "HUM_LEVELS", "HumLevel", "Note", "hum", "make_beats", "unknown_melodies"]

_CTRL = 1000  # Hz: the voice's pitch and loudness are drawn at this rate, then interpolated
_VOICE_RATE = 16000  # the voice is made at this rate (3x fewer samples), then resampled to RATE
_VOICE_TOP_HZ = 5000.0  # harmonics above it are below -40 dB after tilt and formants
_REGISTERS = (52.0, 63.0)  # MIDI middles of a male (45-60) and a female (55-72) hummer
_TRANSPOSE = (-7, 7)  # semitones before the octave shift: any key
_LEGATO = 0.4  # share of notes joined to the next without a breath gap
_LEAD_IN_S = (0.3, 1.0)  # a recording starts before the voice does...
_LEAD_OUT_S = (0.3, 0.8)  # ...and stops after it
_VOICE_DBFS = (-26.0, -14.0)  # loudness of the dry voice: distance to the microphone varies
_VOWELS = {  # (formant Hz, bandwidth Hz): adult averages (Peterson & Barney; a nasal murmur for "mm")
    "oo": ((300, 60), (870, 90), (2240, 120), (3300, 200)), "ah": ((730, 90), (1090, 110), (2440, 140), (3400, 200)),
    "oh": ((570, 80), (840, 100), (2410, 140), (3300, 200)), "mm": ((270, 60), (2200, 300), (3300, 400))}
_NASAL_ZERO = (1100.0, 200.0)  # the closed mouth's antiresonance (Hz, bandwidth), for "mm"
_BREATH_CORNER_HZ = 1000.0  # turbulence at the glottis has little energy below ~1 kHz: a 12 dB/octave high-pass


@dataclass(frozen=True)
class HumLevel:
    """How strongly a hummer errs, and in which room: the module's table says what each field is."""
    name: str  # "easy" | "moderate" | "hard"
    detune_cents: float
    drift_cents: float
    wobble_cents: float
    vibrato_cents: float
    slide_prob: float
    slide_s: float
    wrong_rate: float
    missing_rate: float
    extra_rate: float
    speed: tuple[float, float]
    jitter: float
    room: str
    breath_db: float


HUM_LEVELS = {level.name: level for level in (
    HumLevel("easy", 10, 10, 3, 15, 0.2, 0.04, 0.0, 0.0, 0.0, (0.9, 1.1), 0.04, "CLEAN", -40),
    HumLevel("moderate", 25, 30, 8, 30, 0.5, 0.08, 0.05, 0.05, 0.03, (0.8, 1.25), 0.10, "SOFT", -30),
    HumLevel("hard", 40, 60, 15, 60, 0.8, 0.15, 0.15, 0.12, 0.08, (0.7, 1.4), 0.20, "HARD", -22))}


def hum(melody: list[Note], level: HumLevel, rng: np.random.Generator, seconds: tuple[float, float] = (5, 20),
        *, noise: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """An excerpt of `melody` (from a random note, `seconds` long at the hum's tempo, give or take a note)
    hummed at `level`, in its room (with a random kind of `noise`, `degrade.noise_bank`'s; none when None)
    and through Opus: 48 kHz float32. The truth: start_s and end_s (the excerpt in the melody's timeline),
    tempo (hum seconds a melody second: 1.25 is a hum 25% slower), transpose (semitones from the melody's
    pitch to the hum's, octaves included), notes (how many were sung), offset_s (when the first sung note
    starts in the audio)."""
    sung, truth = _sung(melody, level, rng, seconds)
    lead_in = float(rng.uniform(*_LEAD_IN_S))
    sung = [Note(n.onset_s + lead_in, n.duration_s, n.pitch) for n in sung]
    total_s = sung[-1].onset_s + sung[-1].duration_s + rng.uniform(*_LEAD_OUT_S)
    x = _voice(*_contour(sung, level, rng, total_s), level, rng)
    kind = str(rng.choice(sorted(noise))) if noise else None
    x = degrade(x, LEVELS[level.room], noise[kind] if kind else None, rng)
    return opus_round_trip(x, RATE, LEVELS[level.room].opus_kbps), {**truth, "offset_s": round(lead_in, 4)}


def _sung(melody: list[Note], level: HumLevel, rng: np.random.Generator, seconds: tuple[float, float]
          ) -> tuple[list[Note], dict]:
    """The notes a hummer sings of a random excerpt (hum time from 0, hum pitch), and the truth."""
    on = np.array([n.onset_s for n in melody])
    end = on + np.array([n.duration_s for n in melody])
    length, stretch = rng.uniform(*seconds), 1 / rng.uniform(*level.speed)
    left = (end[-1] - on) * stretch  # hum seconds from each note to the melody's end
    first = int(rng.choice(np.flatnonzero(left >= min(length, left[0]))))
    spans = (end[first:] - on[first]) * stretch  # hum seconds from the first note to each note's end
    count = min(int(np.searchsorted(spans, length)) + 1, spans.size)  # up to the note that reaches `length`,
    count -= int(count > 2 and spans[count - 1] > seconds[1])  # unless it passes the longest hum
    part = melody[first:first + count]
    semis = int(rng.integers(_TRANSPOSE[0], _TRANSPOSE[1] + 1))  # then whole octaves into the singer's range
    octaves = round((rng.choice(_REGISTERS) - np.median([n.pitch for n in part]) - semis) / 12)
    transpose = semis + 12 * int(octaves)
    ioi = np.diff([n.onset_s for n in part] + [part[-1].onset_s + part[-1].duration_s]) * stretch
    at = np.concatenate([[0.0], np.cumsum(ioi * np.exp(rng.normal(0, level.jitter, ioi.size)))])
    drift, sung = rng.normal(0, level.drift_cents) / 100 * at / at[-1], []
    for k, note in enumerate(part):
        if 0 < k < len(part) - 1 and rng.random() < level.missing_rate:
            continue
        pitch = note.pitch + transpose + drift[k] + np.clip(rng.normal(0, level.detune_cents), -50, 50) / 100
        pitch += rng.choice([-2, -1, 1, 2]) if rng.random() < level.wrong_rate else 0
        gap = at[k + 1] - at[k]
        held = min(note.duration_s * stretch, gap)
        if held * 1.2 > gap and rng.random() < _LEGATO:  # joined to the next note (not across a rest)
            held = gap
        else:
            held = max(held - rng.uniform(0.03, 0.12), 0.08)  # a short break, as between sung syllables
        if rng.random() < level.extra_rate and held > 0.2:
            cut, other = held * rng.uniform(0.4, 0.6), pitch + rng.choice([-2, -1, 0, 1, 2])
            sung += [Note(at[k], cut - 0.03, pitch), Note(at[k] + cut, held - cut, other)]
        else:
            sung.append(Note(at[k], held, pitch))
    span = part[-1].onset_s + part[-1].duration_s - part[0].onset_s
    return sung, {"start_s": part[0].onset_s, "end_s": round(part[0].onset_s + span, 4),
                  "tempo": round(float(at[-1] / span), 4), "transpose": transpose, "notes": len(sung)}


def _contour(sung: list[Note], level: HumLevel, rng: np.random.Generator, total_s: float) -> tuple:
    """Pitch (MIDI), loudness and airflow at _CTRL Hz: each note with a soft attack, vibrato once held,
    maybe a slide from the note before (when joined) or a scoop from below; a breath in after a gap."""
    n = int(total_s * _CTRL)
    pitch, loud, air = np.full(n, sung[0].pitch), np.zeros(n), np.zeros(n)
    rate, before = rng.uniform(5, 6), Note(0.0, 0.0, sung[0].pitch)
    for note in sung:
        a, b = int(note.onset_s * _CTRL), min(n, int((note.onset_s + note.duration_s) * _CTRL))
        t = np.arange(b - a) / _CTRL
        vibrato = np.sin(2 * np.pi * (rate * t + rng.random())) * np.clip(t / 0.3 - 0.5, 0, 1)  # from 150 ms
        p = note.pitch + level.vibrato_cents / 100 * vibrato
        gap = note.onset_s - before.onset_s - before.duration_s
        if rng.random() < level.slide_prob:
            source = before.pitch if gap < 0.02 else note.pitch - rng.uniform(0.3, 1.0)
            glide = np.clip(t / (level.slide_s * rng.uniform(0.5, 1.5)), 0, 1)
            p += (source - note.pitch) * 0.5 * (1 + np.cos(np.pi * glide))
        attack = 0.02 if gap < 0.02 else rng.uniform(0.04, 0.1)
        pitch[a:b], pitch[b:] = p, note.pitch  # held through silence: no pitch jump at the next onset
        envelope = np.sin(np.pi / 2 * np.clip(t / attack, 0, 1)) ** 2 * np.clip((t[-1] - t) / 0.05, 0, 1)
        loud[a:b] = envelope * 10 ** (rng.normal(0, 2) / 20)
        if gap > 0.25:
            w = int(min(0.4, 0.7 * gap) * _CTRL)
            air[a - w - 20:a - 20] += 2 * np.hanning(w)  # an intake is louder than the air of a sung note
        before = note
    wobble = np.convolve(rng.standard_normal(n), np.hanning(_CTRL // 5), "same")  # below ~5 Hz
    return pitch + wobble / wobble.std() * level.wobble_cents / 100, loud, air + loud


def _voice(pitch: np.ndarray, loud: np.ndarray, air: np.ndarray, level: HumLevel, rng: np.random.Generator
           ) -> np.ndarray:
    """The voice at RATE and _VOICE_DBFS: each harmonic of the pitch weighted by the source's tilt and the
    vowel's formants at its frequency (drawn at _VOICE_RATE), plus breath noise through the same formants."""
    vowel = str(rng.choice(sorted(_VOWELS)))
    ctrl, t = np.arange(pitch.size) / _CTRL, np.arange(pitch.size * _VOICE_RATE // _CTRL) / _VOICE_RATE
    f0 = 440 * 2 ** ((pitch - 69) / 12)
    phase, y = 2 * np.pi * np.cumsum(np.interp(t, ctrl, f0)) / _VOICE_RATE, np.zeros(t.size)
    for k in range(1, int(_VOICE_TOP_HZ / f0.min()) + 1):
        gain = _formants(k * f0, vowel) / k * (k * f0 < _VOICE_TOP_HZ)  # 1/k: -12 dB/octave glottis, +6 lips
        y += np.interp(t, ctrl, gain) * np.sin(k * phase)
    voiced = np.interp(t, ctrl, loud)
    y *= voiced
    freqs = np.fft.rfftfreq(t.size, 1 / _VOICE_RATE)
    shape = _formants(freqs, vowel) * freqs ** 2 / (freqs ** 2 + _BREATH_CORNER_HZ ** 2)
    breath = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * shape, t.size)
    breath *= np.interp(t, ctrl, air) / np.std(breath) * np.sqrt(np.mean(y[voiced > 0.5] ** 2))
    y += breath * 10 ** (level.breath_db / 20)
    y = np.fft.irfft(np.fft.rfft(y), t.size * RATE // _VOICE_RATE)  # to RATE: nothing new above 8 kHz
    return (y / np.sqrt(np.mean(y ** 2)) * 10 ** (rng.uniform(*_VOICE_DBFS) / 20)).astype(np.float32)


def _formants(f: np.ndarray, vowel: str) -> np.ndarray:
    """The vocal tract's gain at `f` Hz: a cascade of resonators (gain 1 at 0 Hz)."""
    h = np.ones_like(f, dtype=float)
    for fc, bw in _VOWELS[vowel]:
        h *= fc ** 2 / np.sqrt((fc ** 2 - f ** 2) ** 2 + (bw * f) ** 2)
    if vowel == "mm":
        fc, bw = _NASAL_ZERO
        h *= np.sqrt((fc ** 2 - f ** 2) ** 2 + (bw * f) ** 2) / fc ** 2
    return h


def demo(folder: Path, count: int) -> None:
    """`count` beats in `folder`/beats and a moderate hum of the first one's melody as
    `folder`/hum.webm (Opus, as the widget sends): the demo of `deploy/dev.sh run`."""
    beats = make_beats(folder / "beats", count)
    audio, _ = hum(beats[0].melody, HUM_LEVELS["moderate"], np.random.default_rng(0), seconds=(10, 12))
    encode_opus_webm(audio, folder / "hum.webm", 32)


if __name__ == "__main__":
    demo(Path(sys.argv[1]), int(sys.argv[2]))
