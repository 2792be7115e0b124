"""Listeners' feedback through Flask's test client: only on an answer ear gave (its query id,
from the query log), once each, about a track that answer offered, within its window, across a
restart; a database made before query ids; and the per-address limit."""
from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest
from helpers import added
from synth import song, write

from ear.app import create_app
from ear.db import Feedback, database
from ear.errors import EarError, RateLimited
from ear.heard import Heard
from ear.querylog import QueryLog
from ear.ratelimit import RateLimiter
from ear.routes.helpers import QUERY_LOG
from ear.routes.site import FEEDBACK_BURST, FEEDBACK_PER_MINUTE

pytestmark = pytest.mark.postgresql


def _add(client, path) -> int:
    with open(path, "rb") as fh:
        return added(client, {"audio": fh})["track"]["id"]


_addresses = (f"10.0.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def _send(client, body):
    """Feedback from an address of its own: these tests are about answers, not the rate limit."""
    return client.post("/feedback", json=body, environ_base={"REMOTE_ADDR": next(_addresses)})


def _rows(config) -> list[tuple]:
    with database.connection_context():
        return database.execute_sql("select query_id, track_id, verdict from feedback order by id").fetchall()


@pytest.fixture
def unknown_clip(tmp_path) -> bytes:
    """Audio that is nothing in the catalog: its answer offers no track."""
    return write(tmp_path / "unknown.wav", song(301, seconds=6)).read_bytes()


def test_feedback_is_taken_once_and_only_on_an_answer_ear_gave(client, config, songs_dir, unknown_clip):
    song2, song5 = _add(client, songs_dir / "song2.flac"), _add(client, songs_dir / "song5.flac")
    answer = client.post("/identify", data=(songs_dir / "song2.flac").read_bytes()).get_json()
    assert [m["track"]["id"] for m in answer["matches"]] == [song2]
    query_id = answer["query_id"]
    assert isinstance(query_id, str) and len(query_id) >= 22
    assert "query_id" not in client.post("/identify", data=b"").get_json()  # refused: no answer

    forged = query_id[:-1] + ("A" if query_id[-1] != "A" else "B")
    refused = [
        ({"verdict": "right", "track_id": song2}, 400, "bad_feedback"),  # no query id
        ({"verdict": "right", "query_id": 12345}, 400, "bad_feedback"),
        ({"verdict": "right", "query_id": "x" * 65}, 400, "bad_feedback"),
        ({"verdict": "right", "query_id": forged}, 404, "unknown_query"),
        ({"verdict": "wrong", "query_id": query_id, "track_id": song5}, 400, "track_not_in_answer"),
    ]
    for body, status, code in refused:
        r = _send(client, body)
        assert (r.status_code, r.get_json()["error"]["code"]) == (status, code), body
    assert _rows(config) == []

    first = _send(client, {"verdict": "right", "query_id": query_id, "track_id": song2})
    assert first.status_code == 201, first.text
    assert first.get_json()["feedback"]["query_id"] == query_id
    again = _send(client, {"verdict": "wrong", "query_id": query_id})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "feedback_already_given"

    # Another answer has its own id; an answer that offered no track may be called wrong.
    nothing = client.post("/identify", data=unknown_clip).get_json()
    assert nothing["matches"] == [] and nothing["query_id"] != query_id
    r = _send(client, {"verdict": "wrong", "query_id": nothing["query_id"], "actual": "x"})
    assert r.status_code == 201, r.text
    assert _rows(config) == [(query_id, song2, "right"), (nothing["query_id"], None, "wrong")]


def test_candidates_and_similar_answers_offer_their_tracks(config, songs_dir, tmp_path):
    client = create_app(replace(config, top_k=1)).test_client()  # one match; candidates go on
    song2, song5 = _add(client, songs_dir / "song2.flac"), _add(client, songs_dir / "song5.flac")
    both = song(2)[44100 * 5: 44100 * 15] + 0.3 * song(5)[44100 * 20: 44100 * 30]
    clip = write(tmp_path / "both.wav", both / 1.5).read_bytes()
    ranked = client.post("/identify?candidates=2", data=clip).get_json()
    [match] = [m["track"]["id"] for m in ranked["matches"]]
    [candidate] = {c["track"]["id"] for c in ranked["candidates"]} - {match}
    assert {match, candidate} == {song2, song5}
    feedback = {"verdict": "wrong", "query_id": ranked["query_id"], "track_id": candidate}
    assert _send(client, feedback).status_code == 201

    similar = client.post("/similar", data=(songs_dir / "song2.flac").read_bytes()).get_json()
    assert similar["identified"]["track"]["id"] == song2
    feedback = {"verdict": "right", "query_id": similar["query_id"], "track_id": song2}
    assert _send(client, feedback).status_code == 201


def test_answers_are_taken_within_their_window_and_outlive_a_restart(app, config, client, unknown_clip):
    app.extensions[QUERY_LOG] = QueryLog(config, feedback_window_s=0.5)
    old = client.post("/identify", data=unknown_clip).get_json()["query_id"]
    time.sleep(0.6)
    r = _send(client, {"verdict": "wrong", "query_id": old})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "unknown_query"

    given = client.post("/identify", data=unknown_clip).get_json()["query_id"]
    app.extensions[QUERY_LOG].close()  # what a worker that stops does with its last rows
    restarted = create_app(config).test_client()
    assert _send(restarted, {"verdict": "wrong", "query_id": given}).status_code == 201


def test_an_answer_stays_open_when_its_feedback_was_not_stored(app, config):
    log = app.extensions[QUERY_LOG]
    query_id = log.record(Heard("identify", "owner", 5.0, 1.0, 1.0, offered=[3, 7]))
    with pytest.raises(RuntimeError):
        with log.claim(query_id, 3):
            Feedback.create(verdict="right", query_id=query_id, library="owner")
            raise RuntimeError("the page went away")
    assert _rows(config) == []  # the verdict went with the block's failure
    with log.claim(query_id, 7) as searched:
        Feedback.create(verdict="wrong", query_id=query_id, library=searched, track_id=7)
    with pytest.raises(EarError) as refused:
        with log.claim(query_id, None):
            pass
    assert refused.value.code == "feedback_already_given" and refused.value.status == 409


def test_a_database_from_before_query_ids_gets_the_column(config, unknown_clip):
    create_app(config)
    with database.connection_context():
        database.execute_sql("drop index feedback_query_id")
        database.execute_sql("alter table feedback drop column query_id")
        database.execute_sql("insert into feedback (verdict, actual, created_at) values ('right', '', '2024-01-01')")
    client = create_app(config).test_client()
    query_id = client.post("/identify", data=unknown_clip).get_json()["query_id"]
    r = _send(client, {"verdict": "wrong", "query_id": query_id})
    assert r.status_code == 201, r.text
    assert _rows(config) == [(None, None, "right"), (query_id, None, "wrong")]


def test_feedback_is_limited_per_client_address(client):
    def send(address: str, **headers):
        return client.post("/feedback", json={"verdict": "right"}, headers=headers,
                           environ_base={"REMOTE_ADDR": address})

    assert [send("192.0.2.1").status_code for _ in range(FEEDBACK_BURST)] == [400] * FEEDBACK_BURST
    limited = send("192.0.2.1")
    assert limited.status_code == 429 and limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60 / FEEDBACK_PER_MINUTE
    assert send("192.0.2.2").status_code == 400  # another address has its own bucket
    # Behind Nginx the client is the address it forwards (the proxy's own is the same for all).
    assert send("192.0.2.1", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 400
    assert client.get("/health").status_code == 200


def test_a_bucket_refills_and_idle_addresses_are_forgotten():
    limiter = RateLimiter(per_minute=600, burst=2)  # a token every 0.1 s
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.status == 429 and refused.value.headers() == {"Retry-After": "1"}
    time.sleep(0.15)
    limiter.take("a")
    time.sleep(0.25)  # past the 0.2 s in which any bucket is full again
    limiter.take("b")
    assert len(limiter) == 1

    crowded = RateLimiter(per_minute=1, burst=1, capacity=2)
    for address in ("a", "b", "c"):
        crowded.take(address)
    assert len(crowded) == 2
    crowded.take("a")  # forgotten first, so back with a full bucket
    with pytest.raises(RateLimited):
        crowded.take("c")
