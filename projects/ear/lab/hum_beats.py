"""The catalog of the query-by-humming benchmark (`hum_synth` is its queries, and re-exports this):
`make_beats(folder, count, seed)` renders beats into a folder (Ogg Vorbis, mono 22.05 kHz, listed with their
lead melodies in beats.json; a re-run renders only what is missing); `unknown_melodies(count, seed)` gives
melodies of tunes that no beat plays. Deterministic given the seed.

Faithful how: a beat is an Essen folk song (music21's corpus, single-line tunes of 16 notes or more) played by
a General MIDI lead (flute, violin, sax, trumpet, synth leads, piano, vibraphone, whistle, ...) over chords
fitted bar by bar to the melody (the diatonic triad holding most of the bar's notes), a bass on the roots and
drums on channel 10, at 70-140 quarter notes a minute in any key, after an intro of 1-2 bars, the tune once or
repeated, 25-60 s in all. FluidSynth renders it with FluidR3_GM as a produced mix: the lead ~4 dB over the
rest, not soloed. A beat's `melody` is what its lead plays, in seconds and after transposition.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian's fluid-soundfont-gm: all 128 GM programs
TAIL_S = 2.0  # a beat's file runs this long past its last bar (releases, reverb), then is cut
_RECIPE = 1  # bump when beats would come out differently: a folder of another recipe is refused
_BEAT_RATE = 22050  # a melody lives below 5 kHz; half of 44.1 kHz halves render time and size
_VORBIS_QUALITY = 3  # ~45 kb/s mono: ~0.2 MB a beat, 500 beats in ~110 MB
_SYNTH_GAIN = 0.6  # FluidSynth's master gain: a full mix peaks near full scale, not over it
_TEMPO_BPM = (70.0, 140.0)  # quarter notes a minute: the span of most popular music
_KEY_SHIFT = (-5, 6)  # semitones: any of the 12 keys
_LEAD_CENTRE = 71.5  # MIDI: whole octaves move a tune's mean here, keeping the lead within ~55-88
_BEAT_S = (25.0, 60.0)  # a beat: an intro of 1-2 bars (at most ~6 s), the tune once or more, a last chord
_MIN_NOTES = 16  # shorter tunes give too few distinct excerpts
_UNKNOWN_SHARE = 4  # titles with crc32 % 4 == 0 are in no beat: the unknown melodies' pool
_TPQ = 480  # MIDI ticks a quarter note
_LEADS = (0, 4, 11, 21, 22, 40, 53, 56, 64, 65, 68, 71, 73, 74, 78, 79, 80, 81, 82)  # melodic GM programs
_KEYS = (0, 4, 5, 16, 24, 25, 27, 46, 48, 50, 88, 89, 90)  # pianos, organ, guitars, harp, strings, pads
_BASSES = (32, 33, 34, 35, 38, 39)
_SCALES = {False: (0, 2, 4, 5, 7, 9, 11), True: (0, 2, 3, 5, 7, 8, 10)}  # major, (natural) minor
_CHORD_PRIOR = (1.0, 0.3, 0.2, 0.8, 0.9, 0.5)  # I ii iii IV V vi: folk harmony leans on I, IV, V


@dataclass(frozen=True)
class Note:
    onset_s: float  # in the beat's timeline (or the hum's, for hummed notes)
    duration_s: float
    pitch: float  # MIDI number (detuned when sung)


@dataclass(frozen=True)
class Beat:
    name: str  # file-name safe: "beat-0042"
    path: Path
    melody: list[Note]  # the lead as it sounds, in the beat's seconds and key
    tempo_bpm: float  # quarter notes a minute
    lead_program: int  # General MIDI


def make_beats(folder: Path, count: int, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> list[Beat]:
    """`count` beats rendered into `folder` and listed in its beats.json (with each one's tune and length in
    seconds). A re-run renders only the beats not listed yet; beat i is the same whatever `count` (tunes are
    taken in a seeded order, each title once). `progress(beats done, count)` after each beat rendered."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "beats.json"
    state = json.loads(manifest.read_text()) if manifest.exists() else {"recipe": _RECIPE, "seed": seed, "beats": []}
    if (state["recipe"], state["seed"]) != (_RECIPE, seed):
        raise ValueError(f"{folder} holds the beats of seed {state['seed']}, recipe {state['recipe']}: "
                         "use another folder")
    done, tunes = state["beats"], _tunes(unknown=False)
    order = np.random.default_rng(seed).permutation(len(tunes))
    cursor, titles = (done[-1]["order"] + 1 if done else 0), {b["title"] for b in done}
    workers = os.cpu_count() or 1

    def render(job: tuple[dict, bytes]) -> dict:
        _render(job[1], job[0]["seconds"], folder / f"{job[0]['name']}.ogg")
        return job[0]

    with ThreadPoolExecutor(workers) as pool:
        while len(done) < count:
            jobs = []  # planned one by one (music21 holds the GIL), then rendered in parallel
            while len(jobs) < min(count - len(done), 4 * workers):
                if cursor == len(tunes):
                    raise ValueError(f"the corpus gives only {len(done) + len(jobs)} beats")
                path, number, title = tunes[order[cursor]]
                tune = None if title in titles else _tune(path, number)
                made = tune and _arrange(*tune, np.random.default_rng([seed, cursor]))
                if made:
                    titles.add(title)
                    s = 60 / made[2]
                    jobs.append(({"name": f"beat-{len(done) + len(jobs):04d}", "title": title,
                                  "tune": f"{path.name}#{number}", "order": int(cursor),
                                  "seconds": round(made[4] * s, 4), "tempo_bpm": round(made[2], 3),
                                  "lead_program": made[3],
                                  "melody": [[round(on * s, 4), round(d * s, 4), float(p)] for on, d, p in made[1]]},
                                 made[0]))
                cursor += 1
            for entry in pool.map(render, jobs):
                done.append(entry)
                (folder / "beats.json.tmp").write_text(json.dumps(state))
                os.replace(folder / "beats.json.tmp", manifest)  # a run stopped mid-write leaves the last list
                if progress:
                    progress(len(done), count)
    return [Beat(b["name"], folder / f"{b['name']}.ogg", [Note(*n) for n in b["melody"]], b["tempo_bpm"],
                 b["lead_program"]) for b in done[:count]]


def unknown_melodies(count: int, seed: int = 0) -> list[list[Note]]:
    """`count` melodies (onsets from 0, at a beat's tempos and keys) of tunes whose titles no beat has."""
    return melodies(count, seed, unknown=True)


def melodies(count: int, seed: int, unknown: bool, avoid: frozenset[str] = frozenset()) -> list[list[Note]]:
    """`count` melodies as `unknown_melodies`, from the unknown pool or the beats' own, of titles
    not in `avoid` (those of the beats made: distractors for a library at scale)."""
    tunes, out, titles = _tunes(unknown=unknown), [], set(avoid)
    for pos in np.random.default_rng(seed).permutation(len(tunes)):
        path, number, title = tunes[pos]
        tune = None if title in titles else _tune(path, number)
        made = tune and _arrange(*tune, np.random.default_rng([seed, int(pos), 1]))
        if made:
            titles.add(title)
            s, first = 60 / made[2], made[1][0][0]
            out.append([Note(round((on - first) * s, 4), round(d * s, 4), float(p)) for on, d, p in made[1]])
            if len(out) == count:
                return out
    raise ValueError(f"the corpus gives only {len(out)} such melodies")


def _tunes(unknown: bool) -> list[tuple[Path, int, str]]:
    """Essen tunes (file, X number, title) of one pool. Variants of a song share a title, so a split by
    title keeps every variant of an unknown melody out of the beats."""
    from music21 import corpus
    out = []
    for path in sorted(p for p in corpus.getPaths() if p.parent.name == "essenFolksong"
                       and not p.name.startswith(("test", "variant"))):  # repeats of the other files' tunes
        for block in re.split(r"^(?=X:)", path.read_text(errors="replace"), flags=re.M)[1:]:
            number, title = int(re.match(r"X:\s*(\d+)", block)[1]), re.search(r"^T:\s*(.*?)\s*$", block, re.M)
            title = title[1].upper() if title else f"{path.name}#{number}"
            if (zlib.crc32(title.encode()) % _UNKNOWN_SHARE == 0) == unknown:
                out.append((path, number, title))
    return out


def _tune(path: Path, number: int) -> tuple[list, list, list] | None:
    """A tune's notes (onset, length in quarters, MIDI), bars (start, length, beat length) and a chord a
    bar; None when it is no single line of enough notes."""
    from music21 import chord, converter, stream
    try:
        score = converter.parse(path, number=number, forceSource=True)
    except Exception:  # a few corpus tunes do not parse: skip them
        return None
    if len(score.parts) != 1 or score.flatten().getElementsByClass(chord.Chord):
        return None
    bars, pulse = [], 1.0
    for m in score.parts[0].getElementsByClass(stream.Measure):
        pulse = float(m.timeSignature.beatDuration.quarterLength) if m.timeSignature else pulse
        bars.append((float(m.offset), float(m.duration.quarterLength), pulse))
    notes = [(float(n.offset), float(n.quarterLength), n.pitch.midi)
             for n in score.stripTies().flatten().notes if n.quarterLength > 0]
    overlap = any(a[0] + a[1] > b[0] + 1e-6 for a, b in zip(notes, notes[1:]))  # voices within the part
    if overlap or len(notes) < _MIN_NOTES or len(bars) < 4 or min(b[1] for b in bars) <= 0:
        return None
    key = score.analyze("key")
    return notes, bars, _chords(notes, bars, key.tonic.pitchClass, key.mode == "minor")


def _chords(notes: list, bars: list, tonic: int, minor: bool) -> list[tuple[int, int, int]]:
    """A diatonic triad a bar (pitch classes, root first): the one holding most of the bar's melody, the
    downbeat's note counting more, leaning to I, IV and V; a bar without notes keeps the chord before."""
    scale = [(tonic + s) % 12 for s in _SCALES[minor]]
    triads = [(scale[d], scale[(d + 2) % 7], scale[(d + 4) % 7]) for d in range(6)]
    if minor:
        triads[4] = (scale[4], (scale[6] + 1) % 12, scale[1])  # the major V of harmonic minor
    chords, last = [], triads[0]
    for start, length, _ in bars:
        weight = np.zeros(12)
        for on, dur, midi in notes:
            overlap = min(on + dur, start + length) - max(on, start)
            weight[midi % 12] += max(overlap, 0) * (1.5 if on == start else 1.0)
        if weight.any():
            score = [weight[list(triad)].sum() + 0.3 * prior * length for triad, prior in zip(triads, _CHORD_PRIOR)]
            last = triads[int(np.argmax(score))]
        chords.append(last)
    return chords


def _arrange(notes: list, bars: list, chords: list, rng: np.random.Generator) -> tuple | None:
    """A beat of a tune: its MIDI file, the lead's notes (quarters, MIDI), tempo, lead program and length in
    quarters; None when the tune at the drawn tempo fits no beat length. A pickup bar ends the intro."""
    bpm = float(rng.uniform(*_TEMPO_BPM))
    pickup = bars[0][1] if bars[0][1] < bars[1][1] - 1e-6 else 0.0
    body, chords = (bars[1:], chords[1:]) if pickup else (bars, chords)
    period, bar, pulse = bars[-1][0] + bars[-1][1], body[0][1], body[0][2]
    intro = bar * (1 if bar * 60 / bpm > 3 else int(rng.integers(1, 3)))
    fits = [r for r in range(1, 5) if _BEAT_S[0] <= (intro + r * period + bar) * 60 / bpm <= _BEAT_S[1]]
    if not fits:
        return None
    reps = fits[0] + int(len(fits) > 1 and rng.random() < 0.5)
    shift = int(rng.integers(_KEY_SHIFT[0], _KEY_SHIFT[1] + 1))
    shift += 12 * round((_LEAD_CENTRE - np.mean([n[2] for n in notes]) - shift) / 12)
    segments, melody = [(i * bar, bar, pulse, chords[0]) for i in range(round(intro / bar))], []
    for r in range(reps):  # a repeat's pickup falls in the last bar of the one before
        base = intro - pickup + r * period
        melody += [(base + on, dur * 0.92, midi + shift) for on, dur, midi in notes]  # detached, as played
        segments += [(base + s, length + pickup * (k == len(body) - 1 and r < reps - 1), p, c)
                     for k, ((s, length, p), c) in enumerate(zip(body, chords))]
    end = intro - pickup + reps * period
    segments.append((end, bar, pulse, chords[-1]))  # the last chord, rung out
    lead = int(rng.choice(_LEADS))
    keys, vel, events = int(rng.choice([p for p in _KEYS if p != lead])), int(rng.integers(90, 116)), []
    for ch, program, volume, pan in ((0, lead, rng.integers(98, 121), 64), (1, keys, rng.integers(80, 101), 44),
                                     (2, int(rng.choice(_BASSES)), 100, 64), (9, 0, rng.integers(90, 111), 72)):
        events += [(-1.0, bytes((0xB0 | ch, 7, int(volume)))), (-1.0, bytes((0xB0 | ch, 10, pan))),
                   (-1.0, bytes((0xC0 | ch, program)))]  # before any note: time 0 once written
    events += [e for on, dur, midi in melody for e in _note(0, on, dur, midi, vel)]
    events += _note(9, intro, 1.0, 49, 90)  # a crash where the tune comes in
    events += _backing(segments, shift, str(rng.choice(["block", "pulse", "arpeggio"])), rng)
    return _midi(events, bpm), melody, bpm, lead, end + bar


def _note(ch: int, at: float, dur: float, pitch: int, vel: int) -> list[tuple[float, bytes]]:
    return [(at, bytes((0x90 | ch, pitch, vel))), (at + dur, bytes((0x80 | ch, pitch, 0)))]


def _backing(segments: list, shift: int, style: str, rng: np.random.Generator) -> list[tuple[float, bytes]]:
    """Bar by bar: the chord (held, struck on each beat or in eighths), the bass on every other beat (root,
    then the fifth below), kick and snare on the beats (3 beats: kick, snare, snare), hats on the eighths."""
    out = []
    for start, length, pulse, chord in segments:
        root = 48 + (chord[0] + shift) % 12
        voicing = [root] + [root + (pc - chord[0]) % 12 for pc in chord[1:]]
        beats, eighths = np.arange(0, length - 1e-6, pulse), np.arange(0, length - 1e-6, 0.5)
        if style == "block":
            out += [e for p in voicing for e in _note(1, start, length, p, 62)]
        elif style == "pulse":
            out += [e for b in beats for p in voicing for e in _note(1, start + b, pulse * 0.8, p, 60)]
        else:  # up through two octaves
            out += [e for i, b in enumerate(eighths)
                    for e in _note(1, start + b, 0.5, voicing[i % 3] + 12 * (i % 6 > 2), 58)]
        for i, b in enumerate(beats):
            if i % 2 == 0:
                out += _note(2, start + b, min(2 * pulse, length - b) * 0.9, root - 12 - 5 * (i % 4 == 2), 90)
            drum = 36 if i % 2 == 0 and (i == 0 or beats.size != 3) else 38
            out += _note(9, start + b, 0.25, drum, int(rng.integers(80, 100)))
        out += [e for b in eighths for e in _note(9, start + b, 0.25, 42, int(rng.integers(45, 65)))]
    return out


def _midi(events: list[tuple[float, bytes]], bpm: float) -> bytes:
    """A format-0 MIDI file; at equal times note-offs (0x8-) sort before note-ons (0x9-)."""
    data, last = bytearray(b"\x00\xff\x51\x03" + int(60e6 / bpm).to_bytes(3, "big")), 0
    for at, message in sorted(events):
        tick = max(0, round(at * _TPQ))
        delta, vlq = tick - last, [(tick - last) & 0x7F]  # a variable-length quantity, 7 bits a byte
        while delta > 0x7F:
            delta >>= 7
            vlq.append(0x80 | delta & 0x7F)
        data += bytes(reversed(vlq)) + message
        last = tick
    data += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TPQ) + b"MTrk" + struct.pack(">I", len(data)) + data


def _render(midi: bytes, seconds: float, target: Path) -> None:
    """FluidSynth's rendering, cut TAIL_S after `seconds`, as mono Ogg Vorbis."""
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav, part = Path(tmp) / "beat.mid", Path(tmp) / "beat.wav", Path(tmp) / "beat.ogg"
        mid.write_bytes(midi)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", str(_SYNTH_GAIN), "-r", str(_BEAT_RATE), "-F", str(wav),
                        str(SOUNDFONT), str(mid)], check=True, capture_output=True, timeout=600)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-t", f"{seconds + TAIL_S:.3f}",
                        "-ac", "1", "-c:a", "libvorbis", "-q:a", str(_VORBIS_QUALITY), str(part)],
                       check=True, timeout=600)
        os.replace(part, target)  # never a half-written beat, should the run stop
