"""The committed model: unit vectors of the right shape, and a window heard through a room is
nearer its clean self than any window of another song."""
from __future__ import annotations

import numpy as np
import torch
from helpers import room_clip
from synth import song

from ear.decode import decode
from ear.embed import DIM, STYLE_DIM, Model, _mean_and_std
from ear.features import squared_magnitude


def _mono16k(audio: np.ndarray, tmp_path, name: str) -> np.ndarray:
    from synth import write
    path = tmp_path / f"{name}.flac"
    write(path, audio)
    return decode(path, max_seconds=120, timeout_s=30)


def test_vectors_are_unit_length_one_per_hop():
    model = Model()
    samples = np.random.default_rng(0).standard_normal(16000 * 10).astype(np.float32) * 0.1
    vectors, starts = model.windows(samples, hop_s=1.0)
    assert vectors.shape == (9, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert starts[0] == 0 and np.allclose(np.diff(starts), 1.0, atol=0.016)  # to a frame
    short, _ = model.windows(samples[:8000])  # half a second: padded to one window
    assert short.shape == (1, DIM)
    again, _, style = model.analyse(samples, hop_s=1.0)
    assert np.array_equal(again, vectors)
    assert style.shape == (STYLE_DIM,) and abs(np.linalg.norm(style) - 1) < 1e-4
    assert np.array_equal(model.clip_vector(samples), style)


def test_style_vectors_hear_the_sound_more_than_the_notes(tmp_path):
    """Two stretches of a song (other notes, same sound) are nearer each other than the song is
    to another song with its treble muffled (a different sound)."""
    model = Model()
    muffled = np.convolve(_mono16k(song(1), tmp_path, "s1"), np.ones(15) / 15, mode="same")
    other = model.analyse(muffled.astype(np.float32))[2]
    for seed in (0, 3):
        x = _mono16k(song(seed), tmp_path, f"s{seed}")
        first, second = model.analyse(x[:16000 * 12])[2], model.analyse(x[16000 * 12:])[2]
        assert float(first @ second) > float(first @ other) + 0.03, seed


def test_a_window_through_a_room_is_nearest_its_clean_self(tmp_path):
    model = Model()
    songs = {seed: _mono16k(song(seed), tmp_path, f"s{seed}") for seed in range(4)}
    stored = {seed: model.windows(x, hop_s=1.0) for seed, x in songs.items()}
    for seed in (0, 2):
        # Opus in WebM at 32 kbit/s, as a browser sends it; the window 1 s into the clip (no
        # coder start-up in it) starts at 10 s in the song.
        query = room_clip(song(seed), 9.0, 4.0, "CLEAN", tmp_path, seed)
        q = model.windows(query, hop_s=0.5)[0][2]
        own_vectors, own_starts = stored[seed]
        own = float(q @ own_vectors[np.argmin(np.abs(own_starts - 10.0))])
        others = max(float(np.max(v @ q)) for s, (v, _) in stored.items() if s != seed)
        assert own > others + 0.05, (seed, own, others)


def test_the_texture_statistics_are_torchs_mean_and_std():
    """The oracle: torch's own mean and unbiased std, on a channels-last tensor like the
    network's (where torch's std was the slow one)."""
    x = torch.relu(torch.randn(8, 192, 4, 8)).contiguous(memory_format=torch.channels_last)
    x[0, 0] = 0.0  # a silent channel: no spread, and no NaN
    mean, std = _mean_and_std(x)
    assert torch.allclose(mean, x.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(std, x.std(dim=(2, 3)), atol=1e-5)
    assert std[0, 0] == 0.0


def test_the_squared_magnitude_is_abs_squared():
    spec = torch.stft(torch.randn(16000), 512, 256, window=torch.hann_window(512), return_complex=True)
    assert torch.allclose(squared_magnitude(spec), spec.abs().square(), rtol=1e-5, atol=1e-6)
