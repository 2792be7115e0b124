"""A track streams through ingest a block at a time: the same peaks, landmarks and vectors as
one pass over the whole, memory that does not grow with its length, and bad audio refused in
its first minute."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from synth import RATE, song

from ear.decode import SAMPLE_RATE, SILENCE_CHECK_S, decode_stream, decode_track
from ear.embed import WINDOW_FRAMES, Windows
from ear.models import shipped_model
from ear.errors import BadAudio
from ear.features import (BLOCK_FRAMES, HOP, LANDMARK_PEAKS, MARGIN_FRAMES, TRACK_PEAKS, _block_peaks,
                           block_peaks, blocks, power_spectrum)
from ear.hashes import TRACK_PAIRING, TrackLandmarks, landmarks
from ear.config import load_config
from ear.ingest import Fingerprinting, prepare


@pytest.fixture(scope="module")
def long_music() -> np.ndarray:
    """150 s (three blocks) of music at 16 kHz: peaks and landmarks on every block border."""
    stereo = song(11, seconds=150.0)
    mono = stereo.mean(axis=1)
    return np.interp(np.arange(0, mono.size, RATE / SAMPLE_RATE), np.arange(mono.size),
                     mono).astype(np.float32)


def _one_pass_peaks(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _block_peaks(power_spectrum(torch.from_numpy(samples)), TRACK_PEAKS)


def _random_parts(samples: np.ndarray, seed: int) -> list[np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).integers(0, samples.size, 40))
    return np.split(samples, cuts)


def test_blocks_of_parts_of_any_size_give_the_peaks_of_one_pass(long_music):
    assert long_music.size > 2 * BLOCK_FRAMES * HOP
    whole = _one_pass_peaks(long_music)
    streamed = [block_peaks(b, TRACK_PEAKS) for b in blocks(_random_parts(long_music, 1))]
    for one, other in zip(whole, (np.concatenate(c) for c in zip(*streamed))):
        np.testing.assert_array_equal(one, other)


def test_landmarks_across_block_borders_are_kept(long_music):
    t, f, rank = _one_pass_peaks(long_music)
    strong = rank < LANDMARK_PEAKS
    expected = landmarks(t[strong], f[strong], TRACK_PAIRING)
    built = TrackLandmarks()
    for block in blocks(_random_parts(long_music, 2)):
        built.add(*block_peaks(block, TRACK_PEAKS), until=block.stop)
    hashes, frames = built.result()
    near_borders = np.abs(frames[:, None] - np.array([BLOCK_FRAMES, 2 * BLOCK_FRAMES])).min(axis=1) < 63
    assert near_borders.sum() > 50  # the borders were crossed by many landmarks
    np.testing.assert_array_equal(hashes, expected[0])
    np.testing.assert_array_equal(frames, expected[1])


def test_window_vectors_streamed_are_those_of_one_pass(long_music):
    assert WINDOW_FRAMES <= MARGIN_FRAMES  # a window starting in a block ends in its margin
    model = shipped_model()
    whole_vectors, whole_starts = model.windows(long_music, hop_s=1.0)
    windows = Windows(model, 1.0)
    for block in blocks(_random_parts(long_music, 3)):
        windows.add(block)
    vectors, starts = windows.result()
    np.testing.assert_array_equal(starts, whole_starts)
    np.testing.assert_allclose(vectors, whole_vectors, atol=1e-6)
    assert 147.0 < starts[-1] <= 148.0  # the last whole window, in the last block


def _silent_wav(path: Path, seconds: int) -> Path:
    """Silence as 8-bit 8 kHz WAV, written directly: a 3-hour file made in a moment."""
    rate = 8000
    data = seconds * rate
    header = (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
              + rate.to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
              + b"data" + data.to_bytes(4, "little"))
    with open(path, "wb") as fh:
        fh.write(header)
        for _ in range(seconds // 60):
            fh.write(b"\x80" * (60 * rate))  # 0x80 is zero in unsigned 8-bit PCM
    return path


def test_a_three_hour_silence_is_refused_within_its_first_minute(tmp_path):
    source = _silent_wav(tmp_path / "silence.wav", 3 * 3600)
    heard = 0
    with pytest.raises(BadAudio) as caught:
        for part in decode_stream(source, max_seconds=4 * 3600, timeout_s=120):
            heard += part.size
    assert caught.value.code == "silent" and caught.value.status == 422
    assert heard < (SILENCE_CHECK_S + 10) * SAMPLE_RATE


def test_audio_without_peaks_is_refused_within_its_first_minute():
    """A 7 kHz tone: loud, but above the band fingerprints are made of (an hour of it, made as
    it is read: only what was read is ever made)."""
    made = 0

    def tone_parts():
        nonlocal made
        t = np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
        part = (0.3 * np.sin(2 * np.pi * 7000 * t)).astype(np.float32)
        for _ in range(360):
            made += part.size
            yield part

    prints = Fingerprinting()
    with pytest.raises(BadAudio) as caught:
        for block in blocks(tone_parts()):
            prints.add(block)
    assert caught.value.code == "no_landmarks" and caught.value.status == 422
    assert made <= 80 * SAMPLE_RATE

    short = Fingerprinting()  # and a track shorter than that minute, at its end
    for block in blocks([next(tone_parts())]):
        short.add(block)
    with pytest.raises(BadAudio) as caught:
        short.result()
    assert caught.value.code == "no_landmarks"


def _peak_rss_mb(args: list[str]) -> float:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()
    return usage.ru_maxrss / 1024


def test_ear_ingest_memory_does_not_grow_with_the_track(tmp_path):
    """Ingesting 20 minutes costs about what 1 minute costs (decoded whole, 20 minutes of
    16 kHz audio alone would be 77 MB more, and its analysis more again)."""
    minute = _music_flac(tmp_path / "minute.flac", 60)
    long = _music_flac(tmp_path / "long.flac", 1200)
    small, large = (_peak_rss_mb([sys.executable, "-m", "ear.cli", "--data-dir", str(tmp_path / name),
                                  "ingest", str(path)])
                    for name, path in (("a", minute), ("b", long)))
    assert large - small < 60, (small, large)


def _music_flac(path: Path, seconds: int) -> Path:
    """`seconds` of synthetic music: 40 s of it looped, as FLAC at 16 kHz."""
    loop = path.with_suffix(".wav")
    sf.write(loop, song(5, seconds=40.0), RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "-1", "-i", str(loop), "-t", str(seconds),
                    "-ar", "16000", "-c:a", "flac", str(path)], check=True)
    return path


def test_ffmpeg_is_stopped_as_soon_as_the_analysis_stops(tmp_path):
    """A 10-minute tone is refused in its first minute: its FFmpeg is gone then, even while the
    error (and its traceback, which holds the decoder) is still held."""
    tone = tmp_path / "tone.wav"  # float samples: no quantization noise to make peaks of
    t = np.arange(600 * SAMPLE_RATE) / SAMPLE_RATE
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 7000 * t)).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(BadAudio) as caught:
        prepare(tone, load_config(data_dir=tmp_path / "data"), shipped_model())
    assert caught.value.code == "no_landmarks"
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children
                if Path(f"/proc/{pid}/cmdline").exists()]
    assert not [c for c in commands if c.startswith(b"ffmpeg")]


def test_ffmpeg_runs_in_a_session_of_its_own(tmp_path):
    """Supervisor stops `ear worker` with a signal to its process group: FFmpeg, outside that
    group, is not cut short (which would fail the file); the worker stops it itself."""
    parts = decode_track(_music_flac(tmp_path / "long.flac", 600), load_config(data_dir=tmp_path / "data"))
    next(parts)
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    ffmpeg = [int(pid) for pid in children if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ffmpeg")]
    assert ffmpeg and all(os.getsid(pid) == pid != os.getsid(0) for pid in ffmpeg)
    parts.close()
