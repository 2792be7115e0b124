"""Whatever a client sends — generated ids, parameters, form fields, bodies, JSON — every route
answers with a JSON body and a status below 500, and the catalog is what it was."""
from __future__ import annotations

import io
import itertools
import json

import pytest
from helpers import AUTH, work
from hypothesis import HealthCheck, given, settings, strategies as st

from ear.app import create_app
from ear.config import load_config
from ear.models import shipped_model
from ear.ingest import prepare
from ear.heard import Heard
from ear.routes.helpers import QUERY_LOG

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ids = st.one_of(st.integers(0, 2**70), st.sampled_from([2**63 - 1, 2**63, 2**64, 10**30]))
text = st.text(max_size=40)
params = st.dictionaries(st.sampled_from(["k", "seed", "artist", "genre", "exclude_artist",
                                          "candidates"]), text | st.text("0123456789", min_size=19),
                         max_size=4)
any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-2**80, 2**80) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=20)


@pytest.fixture(scope="module")
def served(tmp_path_factory, songs_dir):
    config = load_config(data_dir=tmp_path_factory.mktemp("abuse") / "data", admin_token="test-token",
                         allow_playback=True)
    app = create_app(config)
    catalog = app.extensions["ear"]
    catalog.store([prepare(songs_dir / f"song{i}.flac", config, shipped_model(), metadata={"artist": "Ann"})
                   for i in (0, 1)])
    return app.test_client(), {t.id for t in catalog.tracks()}


def _answer(client, track_ids) -> str:
    """The query id of an answer that offered `track_ids`, as /identify would give."""
    return client.application.extensions[QUERY_LOG].record(Heard("identify", "owner", 5.0, 1.0, 1.0, track_ids))


_addresses = (f"10.0.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def _feedback(client, body: str):
    """Feedback from an address of its own, so that the rate limit is not what answers."""
    return client.post("/feedback", data=body, content_type="application/json",
                       environ_base={"REMOTE_ADDR": next(_addresses)})


def _answered(response) -> None:
    assert response.status_code < 500, response.text
    body = response.get_json(silent=True)
    assert isinstance(body, dict), response.data[:200]
    if response.status_code >= 400:
        assert body["error"]["code"] and body["error"]["message"]


def _unchanged(client, track_ids) -> None:
    assert {t["id"] for t in client.get("/tracks").get_json()["tracks"]} == track_ids


@SETTINGS
@given(track_id=ids)
def test_any_track_id_on_every_track_route(served, track_id):
    client, track_ids = served
    for path in ("", "/similar", "/audio", "/cover"):
        response = client.get(f"/tracks/{track_id}{path}")
        if path != "/audio" or response.status_code != 200:
            _answered(response)
    if track_id not in track_ids:
        _answered(client.delete(f"/tracks/{track_id}", headers=AUTH))
    _answered(client.delete(f"/tracks/{track_id}"))
    _unchanged(client, track_ids)


@SETTINGS
@given(query=params)
def test_any_parameters_on_the_read_routes(served, query):
    client, track_ids = served
    for path in ("/radio", f"/tracks/{min(track_ids)}/similar", "/tracks", "/health"):
        _answered(client.get(path, query_string=query))


@settings(max_examples=20, deadline=None)
@given(query=params, body=st.binary(max_size=300))
def test_any_parameters_and_bytes_on_the_upload_routes(served, query, body):
    client, track_ids = served
    for path in ("/identify", "/similar"):
        _answered(client.post(path, query_string=query, data=body))
    fields = {"audio": (io.BytesIO(body), "x.mp3"), "title": "t" * 10, "artist": "a"}
    response = client.post("/tracks", data=fields, headers=AUTH)
    _answered(response)
    assert response.status_code == 202  # kept and queued: the worker finds out what it is
    work(client.application)
    job = client.get(response.get_json()["job"]["url"], headers=AUTH).get_json()["job"]
    assert job["status"] == "failed" and job["error"]["code"] != "internal", job
    _unchanged(client, track_ids)


numbers = st.one_of(st.floats(), st.integers(-2**80, 2**80), ids, text, st.none(), st.booleans())
feedback = st.one_of(json_values, st.fixed_dictionaries(
    {"verdict": st.sampled_from(["right", "wrong", "maybe"]), "query_id": st.just("issued") | json_values},
    optional={"track_id": numbers, "offset_s": numbers, "confidence": numbers, "actual": json_values}))


@settings(max_examples=150, deadline=None)
@given(data=feedback)
def test_any_json_as_feedback(served, data):
    client, track_ids = served
    if isinstance(data, dict) and data.get("query_id") == "issued":  # on a real answer: it may be stored
        data["query_id"] = _answer(client, track_ids)
    response = _feedback(client, json.dumps(data))
    _answered(response)
    if response.status_code == 201:
        assert json.loads(response.data) == response.get_json()  # valid JSON: no NaN, no Infinity


@pytest.mark.parametrize("body, status", [
    ("[" * 100_000 + "]" * 100_000, 413),  # nested far past the recursion limit; and too big
    ("[" * 2000 + "]" * 2000, 400),  # nested past the recursion limit, under the size cap
    ('{"verdict": "right", "track_id": 1e300, "query_id": ID}', 400),
    ('{"verdict": "right", "track_id": 18446744073709551616, "query_id": ID}', 400),
    ('{"verdict": "right", "offset_s": NaN, "query_id": ID}', 400),
    ('{"verdict": "wrong", "confidence": Infinity, "query_id": ID}', 400),
    ('{"verdict": "right", "actual": "' + "x" * 5000 + '", "query_id": ID}', 413),
    ('{"verdict": "right", "actual": "\\ud800", "query_id": ID}', 201),  # a lone surrogate, stored as "?"
    ('{"verdict": "right", "track_id": true, "query_id": ID}', 400),
    ('{"verdict": "right", "track_id": 1.5, "query_id": ID}', 400),
    ('{"verdict": "right", "query_id": "\\ud800"}', 404),
])
def test_feedback_the_service_cannot_store_is_refused(served, body, status):
    client, track_ids = served
    body = body.replace("ID", json.dumps(_answer(client, track_ids)))
    response = _feedback(client, body)
    assert response.status_code == status, response.text
    _answered(response)


def test_a_unicode_digit_seed_and_huge_ids_are_client_errors(served):
    client, track_ids = served
    assert client.get("/radio?artist=Ann&seed=²").status_code == 400
    assert client.get("/radio?artist=Ann&seed=" + "9" * 5000).status_code == 400
    for track_id in (2**63, 2**64):
        assert client.get(f"/tracks/{track_id}").status_code == 404
        assert client.delete(f"/tracks/{track_id}", headers=AUTH).status_code == 404
    response = client.post("/tracks", headers=AUTH,
                           data={"audio": (io.BytesIO(b"RIFF"), "a.wav"), "title": "x" * 600_000})
    assert response.status_code == 413 and "500 kB a field" in response.get_json()["error"]["message"]
    _unchanged(client, track_ids)
