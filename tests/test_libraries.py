"""Libraries and users: each user's key reaches their own library only, on every route; two users
with the same music each find their own copy; another's ids answer exactly as ids no one holds;
wrong, revoked and malformed keys are refused; the public library and the admin's reach; `ear
users`; track ids unique across libraries and never reused."""
from __future__ import annotations

import io
import re
import sqlite3

import pytest
from helpers import AUTH, added, run_ear, work
from synth import song, write

from ear import users
from ear.app import create_app
from ear.catalog import Catalog
from ear.config import load_config
from ear.db import Feedback, IssuedTrackId, Track, database
from ear.errors import EarError
from ear.ids import track_ids
from ear.segments import MAX_TRACK_ID
from ear.models import shipped_model
from ear.ingest import prepare

pytestmark = pytest.mark.postgresql


def _key(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def shared(tmp_path, database):
    """An app with playback on; users ann and bob. ann has songs 0 and 1, bob songs 1 and 2 (the
    same music as ann's song 1), the owner song 3. {name: key}, {(name, song): track id}, jobs."""
    app = create_app(load_config(data_dir=tmp_path / "data", admin_token="test-token",
                                 allow_playback=True, database_url=database))
    client = app.test_client()
    keys = {name: users.add(name)[1] for name in ("ann", "bob")}
    keys["owner"] = "test-token"
    ids, job_ids = {}, {}
    for name, n in (("ann", 0), ("ann", 1), ("bob", 1), ("bob", 2), ("owner", 3)):
        audio = write(tmp_path / f"song{n}.wav", song(n))
        response = client.post("/tracks", data={"audio": (open(audio, "rb"), f"song{n}.wav")},
                               headers=_key(keys[name]))
        assert response.status_code == 202, response.get_json()
        job_ids[name, n] = response.get_json()["job"]["id"]
    work(app)
    for (name, n), job_id in job_ids.items():
        job = client.get(f"/jobs/{job_id}", headers=_key(keys[name])).get_json()["job"]
        assert job["status"] == "done" and job["library"] == name, job
        ids[name, n] = job["track"]["id"]
    return client, keys, ids, job_ids


def _query(tmp_path, n: int) -> bytes:
    return write(tmp_path / f"q{n}.wav", song(n)[44100 * 9: 44100 * 17]).read_bytes()


def _identified(client, headers, clip: bytes) -> list[int]:
    response = client.post("/identify", data=clip, headers=headers)
    assert response.status_code == 200, response.get_json()
    return [m["track"]["id"] for m in response.get_json()["matches"]]


def test_each_user_finds_only_their_own_copy(shared, tmp_path):
    client, keys, ids, _ = shared
    both = _query(tmp_path, 1)
    assert ids["ann", 1] != ids["bob", 1]
    assert _identified(client, _key(keys["ann"]), both) == [ids["ann", 1]]
    assert _identified(client, _key(keys["bob"]), both) == [ids["bob", 1]]
    # Music only another library holds: nothing of that library is ever answered (the synthetic
    # songs sound alike, so a library's own tracks may be offered as candidates).
    owns = {name: {i for (who, _), i in ids.items() if who == name} for name in keys}
    for name, clip in (("owner", both), ("ann", _query(tmp_path, 2)), ("bob", _query(tmp_path, 0))):
        headers = {} if name == "owner" else _key(keys[name])  # a visitor: the owner's library
        answer = client.post("/identify?candidates=10", data=clip, headers=headers).get_json()
        assert {m["track"]["id"] for m in answer["matches"] + answer["candidates"]} <= owns[name]
    assert _identified(client, {}, _query(tmp_path, 3)) == [ids["owner", 3]]

    like = client.post("/similar?k=10", data=_query(tmp_path, 0), headers=_key(keys["ann"])).get_json()
    assert {m["track"]["id"] for m in like["matches"]} <= {ids["ann", 0], ids["ann", 1]}
    listed = {name: {t["id"] for t in client.get("/tracks", headers=_key(key)).get_json()["tracks"]}
              for name, key in keys.items()}
    assert listed["ann"] == {ids["ann", 0], ids["ann", 1]} and listed["bob"] == {ids["bob", 1], ids["bob", 2]}
    assert listed["owner"] == set(ids.values())  # the admin sees every library
    assert {t["id"] for t in client.get("/tracks").get_json()["tracks"]} == {ids["owner", 3]}
    mine = client.get("/jobs", headers=_key(keys["ann"])).get_json()["jobs"]
    assert {j["library"] for j in mine} == {"ann"} and len(mine) >= 2


def test_another_users_ids_answer_as_ids_no_one_holds(shared):
    client, keys, ids, job_ids = shared
    ann = _key(keys["ann"])
    nobody = min(set(range(1, 10)) - set(ids.values()))  # an id no library holds
    for other in (ids["bob", 1], ids["bob", 2], ids["owner", 3]):
        for method, path in (("get", "/tracks/{}"), ("get", "/tracks/{}/audio"),
                             ("get", "/tracks/{}/cover"), ("get", "/tracks/{}/similar"),
                             ("delete", "/tracks/{}")):
            theirs = getattr(client, method)(path.format(other), headers=ann)
            no_ones = getattr(client, method)(path.format(nobody), headers=ann)
            assert theirs.status_code == no_ones.status_code == 404, (path, theirs.get_json())
            assert theirs.get_json() == _with_id(no_ones.get_json(), nobody, other)
    theirs = client.get(f"/jobs/{job_ids['bob', 1]}", headers=ann)
    no_ones = client.get(f"/jobs/{2 ** 31 + 7}", headers=ann)  # beyond every id ear draws
    assert theirs.status_code == no_ones.status_code == 404
    assert theirs.get_json()["error"]["code"] == no_ones.get_json()["error"]["code"] == "job_not_found"
    # Nothing of bob's went: his copy is still his, with its audio (the same bytes as ann's).
    assert _with_audio(client, ids["bob", 1], _key(keys["bob"]))


def _with_id(answer: dict, old: int, new: int) -> dict:
    message = answer["error"]["message"]
    return {"error": {**answer["error"], "message": re.sub(rf"\b{old}\b", str(new), message)}}


def _with_audio(client, track_id: int, headers: dict) -> bool:
    return client.get(f"/tracks/{track_id}/audio", headers=headers).status_code == 200


def test_a_user_removes_their_own_copy_and_the_others_stays(shared, tmp_path):
    client, keys, ids, _ = shared
    removed = client.delete(f"/tracks/{ids['ann', 1]}", headers=_key(keys["ann"]))
    assert removed.status_code == 200 and removed.get_json()["removed"]["library"] == "ann"
    work(client.application)  # the reindex job of ann's library
    assert set(_identified(client, _key(keys["ann"]), _query(tmp_path, 1))) <= {ids["ann", 0]}
    assert _identified(client, _key(keys["bob"]), _query(tmp_path, 1)) == [ids["bob", 1]]
    assert _with_audio(client, ids["bob", 1], _key(keys["bob"]))  # the shared original stays


def test_feedback_is_kept_for_the_library_that_answered(shared, tmp_path):
    client, keys, ids, _ = shared
    answer = client.post("/identify", data=_query(tmp_path, 2), headers=_key(keys["bob"])).get_json()
    sent = client.post("/feedback", json={"verdict": "right", "query_id": answer["query_id"],
                                          "track_id": ids["bob", 2]})
    assert sent.status_code == 201, sent.get_json()
    with database.connection_context():
        assert Feedback.get_by_id(sent.get_json()["feedback"]["id"]).library == "bob"


def test_the_admin_reaches_a_library_by_name(shared, tmp_path):
    client, keys, ids, _ = shared
    assert _identified(client, AUTH, _query(tmp_path, 2)) == []  # the owner's library
    assert _identified(client, AUTH, _query(tmp_path, 2)) == []
    as_bob = {"headers": AUTH, "query_string": {"library": "bob"}}
    found = client.post("/identify", data=_query(tmp_path, 2), **as_bob).get_json()["matches"]
    assert [m["track"]["id"] for m in found] == [ids["bob", 2]]
    assert {t["id"] for t in client.get("/tracks", **as_bob).get_json()["tracks"]} == {ids["bob", 1], ids["bob", 2]}
    assert client.get(f"/tracks/{ids['ann', 0]}", **as_bob).status_code == 404  # scoped to bob's
    assert client.get(f"/tracks/{ids['ann', 0]}", headers=AUTH).status_code == 200  # unscoped: any
    nowhere = client.get("/tracks", headers=AUTH, query_string={"library": "nobody"})
    assert nowhere.status_code == 404 and nowhere.get_json()["error"]["code"] == "library_not_found"
    job = added(client, {"audio": (io.BytesIO(_query(tmp_path, 4)), "four.wav")},
                query_string={"library": "bob"})
    assert job["library"] == "bob" and job["track"]["library"] == "bob"


def test_wrong_and_malformed_keys_are_refused(client, tmp_path):
    users.add("gil")  # a site with users and an admin token: these are keys gone wrong
    for authorization in ("Bearer ear_not-a-key", "Bearer ", "Bearer", "bearer x", "ear_no-scheme",
                          "Bearer test-token2"):
        for method, path, body in (("post", "/identify", _query(tmp_path, 0)), ("get", "/tracks", None),
                                   ("get", "/jobs", None), ("post", "/tracks", b"bytes")):
            response = getattr(client, method)(path, data=body, headers={"Authorization": authorization})
            assert response.status_code == 401, (authorization, path, response.get_json())
            assert response.get_json()["error"]["code"] == "unauthorized"


def test_another_schemes_credentials_are_a_visitors(shared, tmp_path):
    """Nginx's auth_basic in front of the site passes its Authorization on: not a key."""
    client, keys, ids, _ = shared
    basic = {"Authorization": "Basic YW5uOmFubg=="}
    assert _identified(client, basic, _query(tmp_path, 3)) == [ids["owner", 3]]
    assert client.post("/tracks", data=b"bytes", headers=basic).status_code == 401


def test_a_revoked_key_is_refused_and_the_tracks_stay(shared, tmp_path):
    client, keys, ids, _ = shared
    users.revoke("ann")
    response = client.post("/identify", data=_query(tmp_path, 0), headers=_key(keys["ann"]))
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert client.get(f"/tracks/{ids['ann', 0]}", headers=AUTH).status_code == 200


def test_an_upload_over_the_limit_with_a_users_key_is_413(tmp_path, database):
    client = create_app(load_config(data_dir=tmp_path / "data", max_upload_mb=1,
                                    database_url=database)).test_client()
    (_, key) = users.add("carol")
    response = client.post("/tracks", data=b"x" * (2 << 20), headers=_key(key))
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "upload_too_large"
    assert client.get("/jobs", headers=_key(key)).get_json()["jobs"] == []


def test_the_public_library_is_the_one_the_owner_names(tmp_path, database):
    config = load_config(data_dir=tmp_path / "data", public_library="dana", database_url=database)
    client = create_app(config).test_client()
    (_, key) = users.add("dana")
    job = added(client, {"audio": (open(write(tmp_path / "s5.wav", song(5)), "rb"), "s5.wav")},
                headers=_key(key))
    assert _identified(client, {}, _query(tmp_path, 5)) == [job["track"]["id"]]
    assert [t["id"] for t in client.get("/tracks").get_json()["tracks"]] == [job["track"]["id"]]


def test_a_public_library_that_cannot_be_one_stops_the_start(tmp_path):
    with pytest.raises(EarError) as refused:
        create_app(load_config(data_dir=tmp_path / "data", public_library="../owner"))
    assert refused.value.code == "bad_name"


def test_ear_users_add_list_revoke(tmp_path, database):
    data = tmp_path / "data"
    made = run_ear(data, "users", "add", "erin", database_url=database).stdout
    key = re.search(r"ear_\S+", made).group(0)
    assert "erin\tactive" in run_ear(data, "users", "list", database_url=database).stdout
    assert run_ear(data, "users", "add", "erin", check=False, database_url=database).returncode == 1
    assert run_ear(data, "users", "add", "Bad Name", check=False, database_url=database).returncode == 1
    assert run_ear(data, "users", "add", "owner", check=False, database_url=database).returncode == 1
    assert run_ear(data, "--library", "erin", "ingest", str(write(tmp_path / "s6.wav", song(6))),
                   database_url=database).stdout.startswith("added")
    assert "erin" in run_ear(data, "--library", "erin", "tracks", database_url=database).stdout
    assert run_ear(data, "--library", "nobody", "tracks", check=False,
                   database_url=database).returncode == 1
    Catalog(load_config(data_dir=data, database_url=database))  # this process on that database
    assert users.find(key).name == "erin"
    run_ear(data, "users", "revoke", "erin", database_url=database)
    assert users.find(key) is None
    assert "erin\trevoked" in run_ear(data, "users", "list", database_url=database).stdout


def test_track_ids_are_random_unique_across_libraries_and_never_reused(catalog, songs_dir):
    prepared = prepare(songs_dir / "song0.flac", catalog.config, shipped_model())
    [(first, _)] = catalog.store([prepared])
    catalog.remove(first.id)
    [(again, created)] = catalog.store([prepared], "zoe")
    assert created and again.id != first.id
    drawn = track_ids(500)
    assert len(set(drawn)) == 500 and not {first.id, again.id} & set(drawn)
    assert max(drawn) - min(drawn) > MAX_TRACK_ID // 2  # spread out: nothing to count from them
    with database.connection_context():
        assert IssuedTrackId.select().count() == 502
        assert Track.get_by_id(again.id).library == "zoe"


def test_track_ids_start_above_an_older_ears_and_run_out_with_a_clear_error(catalog):
    with database.connection_context():  # a track an older ear numbered in sequence
        Track.create(id=MAX_TRACK_ID - 5, title="old", duration=1.0, source="old.wav", content_hash="h")
    assert sorted(track_ids(5)) == list(range(MAX_TRACK_ID - 4, MAX_TRACK_ID + 1))
    with pytest.raises(EarError) as caught:
        track_ids(1)
    assert caught.value.code == "track_ids_exhausted" and caught.value.status == 507


def test_a_catalog_from_before_libraries_is_the_owners(tmp_path, songs_dir):
    """A database an older ear made (a content hash unique in the whole catalog, no library
    columns): its tracks become the owner's, and a user may then add the same music."""
    config = load_config(data_dir=tmp_path / "data")
    old = Catalog(config)
    prepared = prepare(songs_dir / "song0.flac", config, shipped_model())
    [(track, _)] = old.store([prepared])
    with sqlite3.connect(config.db_path) as db:
        db.executescript("DROP INDEX track_library_content_hash; ALTER TABLE track DROP COLUMN library;"
                         "CREATE UNIQUE INDEX track_content_hash ON track (content_hash);")
    catalog = Catalog(config)
    assert [(t.id, t.library) for t in catalog.tracks()] == [(track.id, "owner")]
    [(theirs, created)] = catalog.store([prepared], "fay")
    assert created and theirs.id != track.id
    with sqlite3.connect(config.db_path) as db:
        names = {row[1] for row in db.execute("PRAGMA index_list(track)")}
    assert "track_content_hash" not in names and "track_library_content_hash" in names
