"""Settings are declared once, with their help: `.env.example` is that list written out."""
from __future__ import annotations

from dataclasses import fields

import pytest
from helpers import REPO

from ear.config import Config, env_example, env_name, load_config


def test_env_example_is_every_setting_with_its_help_and_default():
    shipped = (REPO / ".env.example").read_text()
    assert shipped == env_example(), "run: python -m ear.config > .env.example"
    lines = shipped.splitlines()
    for f in fields(Config):
        at = next(i for i, line in enumerate(lines) if line.startswith(env_name(f.name) + "="))
        above = []
        while lines[at - 1 - len(above)].startswith("# "):
            above.insert(0, lines[at - 1 - len(above)][2:])
        assert " ".join(above) == f.metadata["help"] and len(above[0]) > 10, f.name


def test_the_environment_overrides_the_defaults_and_bad_values_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("EAR_TOP_K", "9")
    monkeypatch.setenv("EAR_ALLOW_PLAYBACK", "yes")
    config = load_config(env_file=tmp_path / "none.env")
    assert config.top_k == 9 and config.allow_playback is True
    monkeypatch.setenv("EAR_MATCH_THRESHOLD", "high")
    with pytest.raises(SystemExit, match="EAR_MATCH_THRESHOLD='high'"):
        load_config(env_file=tmp_path / "none.env")
