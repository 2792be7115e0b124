"""The learning loop end to end, as an owner runs it: a catalog, a query ear was sure of kept,
`ear train --from-catalog` making a version with its figures, `ear models use` switching the
indexes to it through the worker, and back."""
from __future__ import annotations

import fcntl
import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_ear
from synth import song, write

from ear import models
from ear.config import load_config
from ear.db import init_db
from ear.lab.learn import MIN_HELD_OUT, MIN_TRACKS, confirmed_queries, held_out

TRACKS = MIN_TRACKS + 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A catalog of TRACKS songs in two labelled groups, one kept confirmed query, one round."""
    root = tmp_path_factory.mktemp("learn")
    data = root / "data"
    songs = [write(root / f"song{k:02d}.flac", song(200 + k, seconds=25.0)) for k in range(TRACKS)]
    for group in (0, 1):
        run_ear(data, "ingest", "--link", "--artist", f"band{group}", "--genre", f"style{group}",
                *map(str, songs[group::2]))
    listed = [line.split("\t") for line in run_ear(data, "tracks").stdout.splitlines()]
    apart = held_out([SimpleNamespace(id=int(row[0])) for row in listed])
    trained_on = next(k for k, path in enumerate(songs)  # a confirmed query of a held-out track is not used
                      if all(int(row[0]) not in apart for row in listed if row[4] == str(path)))
    write(root / "heard.flac", song(200 + trained_on, seconds=25.0)[16 * 44100:24 * 44100])
    result = run_ear(data, "identify", "--log", "--json", str(root / "heard.flac"),
                     env={"EAR_KEEP_QUERIES": "true"})
    heard = json.loads(result.stdout)
    learnt = run_ear(data, "train", "--from-catalog", "--steps", "3", "--batch", "8",
                     "--clips-per-track", "1")
    return data, heard, learnt.stdout, songs


def test_a_round_makes_a_version_with_its_figures(trained):
    data, heard, out, _ = trained
    assert heard["matches"][0]["confidence"] >= 0.99
    assert "and 1 confirmed queries" in out and "held-out figures" in out
    figures = json.loads((data / "models" / "v1" / "figures.json").read_text())
    assert figures["trained_from"] == models.SHIPPED and figures["queries"] == 1
    for version in ("candidate", "base"):
        assert set(models.FIGURE_LABELS) <= set(figures["eval"][version])
        assert 0 <= figures["eval"][version]["top5_ultra"] <= 100
    listed = [json.loads(line) for line in run_ear(data, "models", "--json").stdout.splitlines()]
    assert [v["version"] for v in listed] == [models.SHIPPED, "v1"]
    assert sum(v["serving"] for v in listed) == 1
    assert listed[1]["serving"] == figures["better"]  # it serves only if better on both


def test_models_use_switches_the_indexes_and_rolls_back(trained):
    data, _, _, songs = trained
    manifest = data / "embeddings" / "manifest.json"
    run_ear(data, "users", "add", "zoe")  # a library that once had a track and has none now
    added = run_ear(data, "--library", "zoe", "ingest", "--link", str(songs[0])).stdout.split("\t")[1]
    run_ear(data, "--library", "zoe", "remove", added)
    gone = write(data.parent / "moved-away.flac", song(500, seconds=25.0))  # linked, then deleted
    run_ear(data, "ingest", "--link", "--title", "gone", str(gone))
    gone.unlink()
    for version in ("v1", models.SHIPPED):
        said = run_ear(data, "models", "use", version).stdout
        assert "1 of their tracks have no audio file left" in said
        run_ear(data, "worker", "--until-idle")  # every library follows (and none loops for ever)
        assert json.loads(manifest.read_text())["model"] == version
        assert json.loads((data / "libraries" / "zoe" / "embeddings" / "manifest.json").read_text())["model"] == version
        assert [v["version"] for v in map(json.loads, run_ear(data, "models", "--json").stdout.splitlines())
                if v["serving"]] == [version]
        found = json.loads(run_ear(data, "identify", "--json", str(songs[5])).stdout)
        assert found["matches"][0]["track"]["source"] == str(songs[5])
    refused = run_ear(data, "models", "use", "v7", check=False)
    assert refused.returncode == 1 and "No model version 'v7'" in refused.stderr


def test_an_index_whose_version_was_deleted_fails_as_model_missing_until_the_worker_follows(trained):
    data = trained[0]
    run_ear(data, "models", "use", "v1")
    run_ear(data, "worker", "--until-idle")
    (data / "models" / "v1").rename(data / "models" / "v1-away")
    try:
        # Music the landmarks cannot place asks the embeddings (a sure fingerprint would not).
        unknown = write(data.parent / "unknown.flac", song(999, seconds=12.0))
        failed = json.loads(run_ear(data, "identify", "--json", str(unknown), check=False).stdout)
        assert failed["error"]["code"] == "model_missing"
        listed = [json.loads(line) for line in run_ear(data, "models", "--json").stdout.splitlines()]
        assert [v["version"] for v in listed if v["serving"]] == ["shipped"]  # the chosen one is gone
        run_ear(data, "worker", "--until-idle")  # at its start it queues what is behind
        assert "error" not in json.loads(run_ear(data, "identify", "--json", str(unknown)).stdout)
    finally:
        (data / "models" / "v1-away").rename(data / "models" / "v1")


def test_confirmed_queries_are_the_sure_or_said_right_ones_with_audio(trained):
    data = trained[0]
    config = load_config(data_dir=data)
    init_db(config.database)
    [query] = confirmed_queries(config)
    assert query["clip"].is_file() and query["offset_s"] == pytest.approx(16.0, abs=0.1)


def test_the_held_out_share_is_stable_and_never_empty():
    small = [SimpleNamespace(id=k) for k in range(1000, 1025)]
    assert len(held_out(small)) >= MIN_HELD_OUT and held_out(small) == held_out(small[::-1])
    large = [SimpleNamespace(id=k) for k in range(5000, 7000)]
    chosen = held_out(large)
    assert 0.17 * len(large) < len(chosen) < 0.23 * len(large)
    assert chosen <= held_out(large + [SimpleNamespace(id=9999)])  # a new track moves no other


def test_the_schedules_line_runs_and_a_second_round_waits(trained, tmp_path):
    line = next(line for line in (ROOT / "deploy" / "ear-learn.cron").read_text().splitlines()
                if line and not line.startswith("#"))
    minute, hour, *_, user, command = line.split(None, 6)
    assert (int(minute), int(hour), user) == (17, 4, "ear")
    ear_args = shlex.split(command.split(".venv/bin/ear", 1)[1].split(">>")[0])
    data = trained[0]
    assert "0 confirmed queries since the newest version, fewer than --if-new 200: nothing to do" in run_ear(
        data, *ear_args).stdout
    assert not (data / "models" / "v2").exists()
    lock = data / "models" / "training" / ".lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run_ear(data, "train", "--from-catalog", check=False)
    assert busy.returncode == 1 and "running already" in busy.stderr


def test_a_catalog_too_small_to_learn_from_is_refused(tmp_path):
    refused = run_ear(tmp_path / "data", "train", "--from-catalog", check=False)
    assert refused.returncode == 1 and f"training needs at least {MIN_TRACKS}" in refused.stderr
    assert not (tmp_path / "data" / "models" / "v1").exists()
