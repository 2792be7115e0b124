"""The query-by-humming benchmark's data, made by the real programs (music21, FluidSynth, FFmpeg): beats
that sound for as long as their melody's timeline says and are rendered once; hums whose pitch, measured
here with a plain autocorrelation, is the melody's moved by the stated transposition, whose length follows
the stated tempo, and whose room is the level's."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from ear.lab.degrade import RATE, pink_noise
from ear.lab.hum_beats import TAIL_S, _tunes
from ear.lab.hum_synth import HUM_LEVELS, Note, hum, make_beats, unknown_melodies

FRAME = 2048  # 43 ms at 48 kHz: two periods of the lowest voice (MIDI 40, 82 Hz)


def test_beats_sound_along_their_timeline_and_are_rendered_once(tmp_path):
    folder, calls = tmp_path / "beats", []
    beats = make_beats(folder, 2, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert [b.name for b in beats] == ["beat-0000", "beat-0001"] and calls == [(1, 2), (2, 2)]
    listed = {b["name"]: b for b in json.loads((folder / "beats.json").read_text())["beats"]}
    for beat in beats:
        audio, rate = sf.read(beat.path)
        seconds, last = listed[beat.name]["seconds"], beat.melody[-1].onset_s + beat.melody[-1].duration_s
        assert abs(audio.size / rate - (seconds + TAIL_S)) < 0.1 and 0 < beat.melody[0].onset_s < last < seconds
        assert 25 <= seconds <= 60 and 70 <= beat.tempo_bpm <= 140 and len(beat.melody) >= 16
        loudness = _db([audio[int(t * rate):int((t + 1) * rate)] for t in range(int(seconds))])
        assert loudness.min() > -40, f"{beat.name}: a silent second inside its timeline"
        assert _db([audio[-rate // 2:]])[0] < np.median(loudness) - 15  # the music stops where the timeline ends
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.ogg")}

    calls.clear()
    assert make_beats(folder, 2, seed=3, progress=lambda done, total: calls.append(done)) == beats
    more = make_beats(folder, 3, seed=3, progress=lambda done, total: calls.append(done))
    assert more[:2] == beats and calls == [3] and len(list(folder.glob("*.ogg"))) == 3
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in folder.glob("*.ogg") if p.name in stamps)
    with pytest.raises(ValueError, match="seed 3"):
        make_beats(folder, 3, seed=4)


def test_unknown_melodies_come_from_tunes_no_beat_may_use():
    assert not {t[2] for t in _tunes(unknown=True)} & {t[2] for t in _tunes(unknown=False)}
    melodies = unknown_melodies(2, seed=1)
    assert len(melodies) == 2 and all(m[0].onset_s == 0 and len(m) >= 16 for m in melodies)
    assert melodies == unknown_melodies(2, seed=1)


@pytest.mark.parametrize("level", ["easy", "moderate", "hard"])
def test_a_hummed_steady_note_is_the_melodys_moved_by_the_stated_transposition(level):
    melody = [Note(1.2 * i, 1.0, 67.0) for i in range(20)]
    errors = HUM_LEVELS[level]
    # Half a semitone more than the drift and detuning allow: a wrong key or octave is 1 or 12 away.
    tolerance = (errors.detune_cents + errors.drift_cents) / 100 + 0.5
    moves = set()
    for seed in range(3):
        audio, truth = hum(melody, errors, np.random.default_rng(seed), (6, 8))
        sung = np.nanmedian(_pitch_track(audio))
        assert abs(sung - (67 + truth["transpose"])) < tolerance, (seed, sung, truth)
        assert 44 <= sung <= 73  # a male or a female voice
        moves.add(truth["transpose"])
    assert len(moves) > 1


def test_a_hum_rises_where_the_melody_rises():
    melody = [Note(1.5 * i, 1.3, 60.0 + step) for i, step in enumerate([0, 2, 4, 5, 7, 9, 11, 12])]
    audio, truth = hum(melody, HUM_LEVELS["easy"], np.random.default_rng(7), (20, 20))
    track = _pitch_track(audio)
    voiced = np.flatnonzero(~np.isnan(track))
    assert truth["notes"] == 8 and np.corrcoef(voiced, track[voiced])[0, 1] > 0.9
    assert 10 < np.nanpercentile(track, 95) - np.nanpercentile(track, 5) < 14


def test_a_hums_length_follows_its_stated_tempo():
    level = dataclasses.replace(HUM_LEVELS["hard"], room="CLEAN", breath_db=-80)  # hard's tempos, no room
    melody = [Note(0.5 * i, 0.4, 60.0 + (i % 5)) for i in range(60)]
    tempos = []
    for seed in range(4):
        audio, truth = hum(melody, level, np.random.default_rng(seed), (8, 12))
        frames = _db(audio[:audio.size // 480 * 480].reshape(-1, 480))  # 10 ms
        sounding = np.flatnonzero(frames > frames.max() - 30) / 100
        assert abs(sounding[0] - truth["offset_s"]) < 0.1
        hummed = truth["tempo"] * (truth["end_s"] - truth["start_s"])
        assert abs(sounding[-1] - sounding[0] - hummed) < 0.25, (seed, sounding[-1] - sounding[0], truth)
        assert 5 <= hummed <= 14 and audio.dtype == np.float32
        tempos.append(truth["tempo"])
    assert max(tempos) / min(tempos) > 1.2  # 0.7-1.4 times the beat's speed


def test_a_hum_is_as_quiet_before_the_voice_as_its_room_and_repeats_given_its_seed():
    melody = [Note(0.6 * i, 0.5, 62.0 + (i % 3)) for i in range(30)]
    noise = {"pink": pink_noise(RATE * 30, np.random.default_rng(0))}
    clean, _ = hum(melody, HUM_LEVELS["easy"], np.random.default_rng(2), noise=noise)
    noisy, truth = hum(melody, HUM_LEVELS["moderate"], np.random.default_rng(2), noise=noise)
    # The first 50 ms are before any breath: silence, or the room's noise (SOFT: 15 dB below the clip).
    assert _db([clean[:2400]])[0] < _db([clean])[0] - 60
    assert -25 < _db([noisy[:2400]])[0] - _db([noisy])[0] < -8
    again, same = hum(melody, HUM_LEVELS["moderate"], np.random.default_rng(2), noise=noise)
    assert np.array_equal(again, noisy) and same == truth


def _db(chunks) -> np.ndarray:
    return np.array([10 * np.log10(np.mean(np.square(c)) + 1e-12) for c in chunks])


def _pitch_track(audio: np.ndarray) -> np.ndarray:
    """MIDI pitch of each frame by autocorrelation (the lag of its highest peak between 1/900 and 1/70 s,
    refined by a parabola); NaN where the frame is 20 dB below the loudest."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME)[::FRAME // 2] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, 2 * FRAME)) ** 2
    lags = np.fft.irfft(power)[:, :FRAME]
    low, high = RATE // 900, RATE // 70
    peak = low + np.argmax(lags[:, low:high], axis=1)
    rows = np.arange(peak.size)
    a, b, c = lags[rows, peak - 1], lags[rows, peak], lags[rows, peak + 1]
    lag = np.clip(peak + 0.5 * (a - c) / np.where(a - 2 * b + c == 0, -1e-12, a - 2 * b + c), low, high)
    pitch = 69 + 12 * np.log2(RATE / lag / 440)
    loudness = _db(frames)
    return np.where(loudness > loudness.max() - 20, pitch, np.nan)
