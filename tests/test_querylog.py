"""The query log: every /identify and /similar is a row with its answer and timings (POST /hum's:
test_hum); a database locked by another writer neither fails nor holds a query; the log's bounds
in days and rows; a visitor's audio kept only when the owner says so, and for its days; and
`ear stats`, per library, from the log and the feedback."""
from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from helpers import added, run_ear
from synth import song, write

from ear import users
from ear.app import create_app
from ear.db import LoggedQuery, database, now
from ear.decode import SAMPLE_RATE
from ear.heard import Answered, Heard
from ear.routes.helpers import QUERY_LOG
from ear.stats import figures


def _logged(app) -> list[LoggedQuery]:
    app.extensions[QUERY_LOG].flush()
    with database.connection_context():
        return list(LoggedQuery.select().order_by(LoggedQuery.created_at))


def _age(query_ids, days: float) -> None:
    with database.connection_context():
        for row in LoggedQuery.select().where(LoggedQuery.query_id.in_(query_ids)):
            LoggedQuery.update(created_at=row.created_at - dt.timedelta(days=days)).where(
                LoggedQuery.query_id == row.query_id).execute()


@pytest.mark.postgresql
def test_every_query_is_logged_with_its_answer(app, client, songs_dir, tmp_path):
    with open(songs_dir / "song2.flac", "rb") as fh:
        song2 = added(client, {"audio": fh})["track"]["id"]
    known = write(tmp_path / "known.wav", song(2)[44100 * 20: 44100 * 28])
    unknown = write(tmp_path / "unknown.wav", song(301, seconds=6))
    asked = [client.post("/identify", data=known.read_bytes()).get_json(),
             client.post("/identify", data=unknown.read_bytes()).get_json(),
             client.post("/similar", data=known.read_bytes()).get_json()]
    rows = {row.query_id: row for row in _logged(app)}
    assert set(rows) == {answer["query_id"] for answer in asked}
    hit, miss, like = (rows[answer["query_id"]] for answer in asked)
    assert (hit.route, hit.library, hit.track_id, json.loads(hit.offered)) == ("identify", "owner", song2, [song2])
    assert abs(hit.offset_s - 20) < 0.1 and hit.score > 7.5 and 0.5 < hit.confidence <= 1
    assert "fingerprint" in hit.evidence.split(",") and abs(hit.clip_s - 8) < 0.05
    assert hit.decode_ms > 0 and hit.match_ms > 0 and hit.audio == ""
    assert (miss.track_id, miss.offset_s, json.loads(miss.offered)) == (None, None, [])
    assert (like.route, like.track_id) == ("similar", song2)
    assert not (app.extensions[QUERY_LOG].config.data_dir / "queries").exists()  # no audio kept


def test_a_query_that_ends_in_an_error_is_logged_with_its_code(app, client, tmp_path):
    noise = write(tmp_path / "noise.wav", np.random.default_rng(3).normal(0, 0.1, 44100 * 4))
    assert client.post("/hum", data=noise.read_bytes()).get_json()["error"]["code"] == "no_melody"
    assert client.post("/identify", data=b"not audio at all" * 100).status_code == 415
    assert client.post("/identify?candidates=x", data=noise.read_bytes()).status_code == 400  # no query
    rows = _logged(app)
    assert [(r.route, r.error, r.track_id) for r in rows] == [("hum", "no_melody", None), ("identify", "not_audio", None)]
    assert abs(rows[0].clip_s - 4) < 0.05 and rows[1].clip_s == 0
    [hum, identify] = figures(30).routes
    assert (hum.queries, hum.errors, identify.errors) == (1, 1, 1)


def test_a_locked_database_neither_fails_nor_holds_a_query(app, client, config, tmp_path):
    clip = write(tmp_path / "unknown.wav", song(301, seconds=6)).read_bytes()
    other = sqlite3.connect(config.db_path, timeout=0)  # another writer (the CLI, the worker)
    other.execute("BEGIN IMMEDIATE")
    try:
        answer = client.post("/identify", data=clip)  # its row cannot be written now
        assert answer.status_code == 200, answer.text
        assert other.execute("select count(*) from loggedquery").fetchone() == (0,)
    finally:
        other.rollback()
        other.close()
    assert [row.query_id for row in _logged(app)] == [answer.get_json()["query_id"]]


def test_the_log_keeps_its_days_and_rows(config):
    app = create_app(replace(config, log_days=10, log_rows=4))
    log = app.extensions[QUERY_LOG]
    ids = [log.record(Heard("identify", "owner", 6.0, 20.0, 30.0)) for _ in range(6)]
    assert len(_logged(app)) == 6
    _age(ids[:1], 11)  # past its days
    _age(ids[1:3], 5)  # within them
    assert log.prune() == 2  # the old one, and the oldest beyond 4 rows
    assert {row.query_id for row in _logged(app)} == set(ids[2:])


def test_the_row_bound_keeps_exactly_its_rows_when_times_tie(config):
    app = create_app(replace(config, log_rows=3))
    log = app.extensions[QUERY_LOG]
    ids = [log.record(Heard("identify", "owner", 6.0, 20.0, 30.0)) for _ in range(4)]
    log.flush()
    with database.connection_context():
        LoggedQuery.update(created_at=now()).execute()  # one moment for all
    assert log.prune() == 1 and len(_logged(app)) == 3 and set(ids) > {r.query_id for r in _logged(app)}


def test_a_clip_that_cannot_be_kept_holds_back_no_row_and_strays_are_swept(config):
    clip = np.zeros(SAMPLE_RATE, np.float32)
    config = replace(config, keep_queries=True, keep_queries_days=1)
    app = create_app(config)
    config.queries_dir.parent.mkdir(parents=True, exist_ok=True)
    config.queries_dir.write_text("a file where the folder should be")
    log = app.extensions[QUERY_LOG]
    query_id = log.record(Heard("identify", "owner", 1.0, 1.0, 1.0), clip)
    assert [(row.query_id, row.audio) for row in _logged(app)] == [(query_id, "")]
    config.queries_dir.unlink()
    log.record(Heard("identify", "owner", 1.0, 1.0, 1.0), clip)
    log.flush()
    stray = config.queries_dir / "left-by-a-killed-process.flac"  # no row names it
    stray.write_bytes(b"x")
    os.utime(stray, (0, 0))
    log.prune()
    assert [p.name for p in config.queries_dir.iterdir()] == [r.audio for r in _logged(app) if r.audio]


def test_audio_is_kept_only_when_the_owner_says_and_for_its_days(config):
    clip = (0.3 * np.sin(np.arange(SAMPLE_RATE * 3) * 0.05)).astype(np.float32)
    app = create_app(replace(config, keep_queries=True, keep_queries_days=2))
    log = app.extensions[QUERY_LOG]
    kept, old = (log.record(Heard("identify", "owner", 3.0, 1.0, 1.0), clip) for _ in range(2))
    rows = {row.query_id: row for row in _logged(app)}
    path = config.queries_dir / rows[kept].audio
    heard, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and np.abs(heard - clip).max() < 1e-4
    _age([old], 3)
    assert log.prune() == 0  # the row stays: only its audio is past its days
    assert not (config.queries_dir / rows[old].audio).exists() and path.exists()
    assert {row.query_id: row.audio for row in _logged(app)}[old] == ""

    off = create_app(config).extensions[QUERY_LOG]  # the owner turned keeping off: none stays
    off.record(Heard("identify", "owner", 3.0, 1.0, 1.0), clip)
    off.flush()
    off.prune()
    assert list(config.queries_dir.iterdir()) == []


@pytest.mark.postgresql
def test_confidence_tenths_counted_as_python_bins_them(config):
    app = create_app(config)
    log = app.extensions[QUERY_LOG]
    confidences = [0.0, 0.1, 0.3, 0.7, 0.7, 0.9, 0.9999, 1.0, None]  # edges, as match.py rounds them
    for c in confidences:
        best = None if c is None else Answered(1, 0.0, 10.0, c, ("fingerprint",))
        log.record(Heard("identify", "owner", 8.0, 1.0, 1.0, [1] if best else [], best))
    log.flush()
    expected = [0] * 10
    for c in confidences:
        if c is not None:
            expected[min(int(round(c * 10, 6)), 9)] += 1
    assert figures(30).confidence_histogram == expected


def test_ear_stats_per_library_from_the_log_and_the_feedback(app, client, config, songs_dir, tmp_path):
    with open(songs_dir / "song2.flac", "rb") as fh:
        song2 = added(client, {"audio": fh})["track"]["id"]
    known = write(tmp_path / "known.wav", song(2)[44100 * 20: 44100 * 28]).read_bytes()
    unknown = write(tmp_path / "unknown.wav", song(301, seconds=6)).read_bytes()
    right = client.post("/identify", data=known).get_json()["query_id"]
    client.post("/identify", data=unknown)
    wrong = client.post("/identify", data=known).get_json()["query_id"]
    for query_id, verdict, actual in ((right, "right", ""), (wrong, "wrong", "the live version")):
        body = {"query_id": query_id, "verdict": verdict, "track_id": song2, "actual": actual}
        assert client.post("/feedback", json=body).status_code == 201
    _, key = users.add("ann")
    assert client.post("/identify", data=known, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    app.extensions[QUERY_LOG].flush()
    (tmp_path / "known.wav").write_bytes(known)
    cli = [json.loads(run_ear(config.data_dir, "identify", "--json", *log, str(tmp_path / "known.wav")).stdout)
           for log in ([], ["--log"])]  # a query from the owner's shell is logged when asked
    assert "query_id" not in cli[0] and cli[1]["query_id"] and cli[1]["matches"][0]["track"]["id"] == song2

    owner = json.loads(run_ear(config.data_dir, "--library", "owner", "stats", "--json").stdout)
    [identify] = owner["routes"]
    assert (identify["route"], identify["queries"], identify["answered"]) == ("identify", 4, 3)
    assert 0 < identify["p50_ms"] <= identify["p95_ms"]
    assert (owner["right"], owner["wrong"], owner["precision"]) == (1, 1, 0.5)
    assert owner["corrections"] == ["the live version"] and owner["top_tracks"] == [[song2, "song2", 3]]
    assert sum(owner["confidence_histogram"]) == 3
    ann = json.loads(run_ear(config.data_dir, "--library", "ann", "stats", "--json").stdout)
    assert [r["queries"] for r in ann["routes"]] == [1] and ann["right"] == ann["wrong"] == 0
    refused = run_ear(config.data_dir, "stats", "--days", "0", check=False)
    assert refused.returncode == 2 and "from 1 to 3650" in refused.stderr
    everyone = run_ear(config.data_dir, "stats").stdout
    assert "every library" in everyone and "precision 50.0%" in everyone, everyone
    assert everyone.split("identify")[1].split()[0] == "5"  # queries: the owner's 4 and ann's 1


def test_a_prefix_of_a_recording_still_going_on_is_logged_only_if_it_matched_and_kept_never(config, songs_dir, tmp_path):
    app = create_app(replace(config, keep_queries=True))
    client = app.test_client()
    known = write(tmp_path / "known.wav", song(2)[44100 * 20: 44100 * 25]).read_bytes()
    missed = client.post("/identify?partial=1", data=known).get_json()  # the library is empty yet
    with open(songs_dir / "song2.flac", "rb") as fh:
        added(client, {"audio": fh})
    matched = client.post("/identify?partial=1", data=known).get_json()
    refused = client.post("/identify?partial=1", data=known[:4000])  # a fraction of a second
    whole = client.post("/identify", data=known).get_json()
    assert matched["matches"] and matched["query_id"] and missed["matches"] == [] and missed["query_id"] is None
    assert refused.status_code == 422
    rows = {row.query_id: row for row in _logged(app)}
    assert set(rows) == {matched["query_id"], whole["query_id"]}  # no row for the missed or refused prefix
    assert rows[matched["query_id"]].audio == "" and rows[whole["query_id"]].audio  # only the whole is kept
