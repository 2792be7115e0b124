"""`ear train` end to end on a few synthesized songs: two steps, a checkpoint to resume from,
and a model file the service can load."""
from __future__ import annotations

import numpy as np
from helpers import run_ear

from ear.embed import DIM, Model


def test_two_steps_make_a_loadable_model_and_a_checkpoint(tmp_path, songs_dir):
    out = tmp_path / "model.pt"
    result = run_ear(tmp_path / "data", "train", "--music", str(songs_dir), "--work", str(tmp_path / "work"),
                     "--steps", "2", "--batch", "4", "--threads", "1", "--out", str(out))
    assert "training on 6 tracks" in result.stdout and "style statistics of 6 tracks" in result.stdout
    assert (tmp_path / "work" / "checkpoint.pt").is_file()
    assert not list(tmp_path.rglob("*.tmp"))
    model = Model(out)
    vectors, _ = model.windows(np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32))
    assert vectors.shape == (2, DIM) and model.version.endswith("step2")
    assert np.all(model.style_std > 0)
