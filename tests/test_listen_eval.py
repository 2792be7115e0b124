"""`ear eval --listen` end to end on synthesized songs: recordings cut into growing prefixes,
both tables printed, a second run reusing the recordings."""
from __future__ import annotations

import json

from synth import speech
from helpers import run_ear

from ear.lab.listen_eval import first_match


def test_listen_eval_prints_both_tables_and_reuses_its_recordings(tmp_path, songs_dir):
    unknown = speech(tmp_path / "unknown")
    args = ["eval", "--listen", "--work", str(tmp_path / "work"), "--catalog", str(songs_dir),
            "--unknown", str(unknown), "--levels", "CLEAN", "--lengths", "2,4", "--every", "1.5",
            "--record-s", "4.5", "--unknown-clips", "2"]
    first = run_ear(tmp_path / "data", *args).stdout
    assert "rendered 6 query clips" in first and "rendered 2 query clips" in first
    # Clean 2 s clips of these songs: a third holds too few landmarks for an answer, none is wrong.
    assert "CLEAN    2s    6  66.7%   0.0%  33.3%      2    0.0%      0.0%" in first
    assert "level     n  ≤1.5s    ≤3s  ≤4.5s" in first
    # Half are answered at the first upload (1.5 s), the others at the second (3 s).
    assert "CLEAN     6  50.0% 100.0% 100.0%    2.2s  3.0s   0.0%      0.0%      2    0.0%" in first
    results = json.loads((tmp_path / "work" / "listen-results.json").read_text())
    assert len(results) == 6 + 2
    assert set(results[0]["answers"]) == {"1.5", "2", "3", "4", "4.5"}

    again = run_ear(tmp_path / "data", *args).stdout
    assert "rendered" not in again  # the same recordings, the same answers
    assert _answers(json.loads((tmp_path / "work" / "listen-results.json").read_text())) == _answers(results)


def _answers(results: list[dict]) -> list[dict]:
    return [{s: {k: v for k, v in a.items() if k != "ms"} for s, a in r["answers"].items()} for r in results]


def test_the_widget_stops_at_the_first_match_however_unsure():
    answers = {"1.5": {"track_id": None}, "3": {"track_id": 7, "confidence": 0.6},
               "4.5": {"track_id": 8, "confidence": 1.0}}
    assert first_match({"answers": answers}, [1.5, 3, 4.5]) == (3, answers["3"])
    assert first_match({"answers": {"1.5": {"track_id": None}}}, [1.5]) is None
