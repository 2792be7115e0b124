"""`ear eval` end to end on synthesized songs: the catalog, its distractors, degraded clips and
speech that is in no catalog, the tables; a second run reuses the work folder."""
from __future__ import annotations

import json
import re
import subprocess

from synth import speech
from helpers import run_ear


def test_eval_prints_its_tables_and_reuses_its_work_folder(tmp_path, songs_dir):
    unknown = speech(tmp_path / "unknown")
    args = ["eval", "--work", str(tmp_path / "work"), "--catalog", str(songs_dir), "--unknown", str(unknown),
            "--levels", "CLEAN,SOFT", "--lengths", "5", "--unknown-clips", "2", "--distractors", "3",
            "--service-queries", "0"]
    first = run_ear(tmp_path / "data", *args).stdout
    assert "catalog: 6 tracks (3 distractors)" in first and "rendered 12 query clips" in first
    assert "CLEAN  Fusion     6 100.0% 100.0%   100.0%" in first
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert len(results) == 6 * 2 + 2 * 2
    listed = run_ear(tmp_path / "work" / "catalog", "tracks").stdout.splitlines()
    distractors = set(json.loads((tmp_path / "work" / "catalog" / "distractors.json").read_text())["ids"])
    real = {int(line.split("\t")[0]) for line in listed} - distractors
    assert len(real) == 6 and {r["track_id"] for r in results} == real | {None}  # never a distractor

    again = run_ear(tmp_path / "data", *args).stdout
    assert "catalog: 6 tracks (3 distractors)" in again and "rendered" not in again
    answers = json.loads((tmp_path / "work" / "results.json").read_text())
    assert _without_times(answers) == _without_times(results)  # the same clips, the same answers

    rebuilt = run_ear(tmp_path / "data", *args, "--rebuild").stdout  # new track ids, the same clips
    assert "catalog: 6 tracks (3 distractors)" in rebuilt and "rendered" not in rebuilt
    assert _asked(json.loads((tmp_path / "work" / "results.json").read_text())) == _asked(results)

    speed = run_ear(tmp_path / "data", "speed", "--catalog", str(songs_dir), "--eval-work",
                    str(tmp_path / "work"), "--runs", "1", "--clips", "3", "--length", "5",
                    "--levels", "CLEAN").stdout
    assert "ingest of 6 files" in speed and "CLEAN: 3 clips of 5 s" in speed
    network = re.search(r"embedding network +([0-9.]+) +([0-9]+)%", speed)
    assert network and float(network.group(1)) > 0, speed
    none = run_ear(tmp_path / "data", "speed", "--eval-work", str(tmp_path / "work"), "--levels", "HARD").stdout
    assert f"HARD: no clips of 10 s in {tmp_path / 'work' / 'queries'}" in none

    short = tmp_path / "short"
    short.mkdir()
    subprocess.run(["espeak-ng", "-w", str(short / "hi.wav"), "Hello."], check=True)
    refused = run_ear(tmp_path / "data", *args[:args.index("--unknown") + 1], str(short),
                      *args[args.index("--unknown") + 2:], check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        f"ear: No audio file in {short} is longer than 12 s: no unknown clips can be cut."]
    no_conf = run_ear(tmp_path / "data", *args[:-2], "--gunicorn-conf", str(tmp_path / "none.py"),
                      check=False)
    assert no_conf.returncode == 1 and "No Gunicorn settings at" in no_conf.stderr


def _asked(results: list[dict]) -> list[tuple]:
    """Which clip of which music each query was: a rebuilt catalog's track ids are new (and
    its ties between tracks may break the other way)."""
    return [(r["file"], r["source"], r["start_s"], r["level"], r["speed"]) for r in results]


def _without_times(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_ms"} for r in results]
