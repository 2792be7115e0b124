"""The HTTP API in this process, through Flask's test client: identify, tracks, the admin token,
JSON errors for bad input, links behind a proxy, the widget, the demo page, playback, covers,
feedback and CORS. (The same app under the real Gunicorn, Nginx and supervisord: the system
tests.)"""
from __future__ import annotations

import io
import sqlite3
import subprocess

import pytest
from helpers import AUTH, added
from synth import encode, song, write

from ear.app import create_app
from ear.config import load_config

DEV_ORIGIN = "http://localhost:8000"


def _upload(client, path, **fields) -> dict:
    """The job of uploading `path`, done."""
    with open(path, "rb") as fh:
        return added(client, {"audio": (fh, path.name), "source": str(path), **fields})


@pytest.fixture
def playback_client(tmp_path):
    config = load_config(data_dir=tmp_path / "data", admin_token="test-token",
                         allow_playback=True, cors_origins=DEV_ORIGIN)
    return create_app(config).test_client()


@pytest.mark.postgresql
def test_identify_by_multipart_and_raw_body(client, songs_dir, tmp_path):
    job = _upload(client, songs_dir / "song2.flac", title="Two", artist="Synth", genre="Test")
    assert job["status"] == "done"
    track = job["track"]
    assert track["title"] == "Two" and track["artist"] == "Synth"
    assert _upload(client, songs_dir / "song2.flac")["error"]["code"] == "duplicate"  # already there

    query = encode(write(tmp_path / "q.wav", song(2)[44100 * 9: 44100 * 17]), tmp_path / "q.mp4",
                   "-c:a", "aac").read_bytes()
    for response in (
        client.post("/identify", data={"audio": (io.BytesIO(query), "q.mp4")}),
        client.post("/identify", data=query,  # curl --data-binary
                    headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ):
        assert response.status_code == 200, response.text
        body = response.get_json()
        assert body["matches"][0]["track"]["id"] == track["id"]
        assert abs(body["matches"][0]["offset_s"] - 9.0) <= 0.1
        assert abs(body["query_seconds"] - 8.0) < 0.1 and body["elapsed_ms"] > 0
        assert "candidates" not in body

    ranked = client.post("/identify?candidates=3", data=query)
    assert ranked.status_code == 200, ranked.text
    assert ranked.get_json()["candidates"][0]["track"]["id"] == track["id"]
    assert "confirmed" not in ranked.get_json()["candidates"][0]  # it is the match

    assert client.get(f"/tracks/{track['id']}").get_json()["title"] == "Two"
    assert client.get("/health").get_json()["tracks"] == 1


@pytest.mark.parametrize("code, status, request_args", [
    ("empty", 400, {"data": b""}),
    ("not_audio", 415, {"data": b"<html>not audio</html>" * 20}),
    ("upload_too_large", 413, {"data": b"\0" * (51 * 1024 * 1024)}),
    ("missing_audio", 400, {"data": {"file": (io.BytesIO(b"abc"), "x")}}),
    ("bad_parameter", 400, {"query_string": {"candidates": "many"}, "data": b"RIFF"}),
    ("bad_parameter", 400, {"query_string": {"candidates": "101"}, "data": b"RIFF"}),
])
def test_bad_input_gets_a_json_error_and_loses_nothing(client, songs_dir, code, status, request_args):
    assert _upload(client, songs_dir / "song1.flac")["status"] == "done"
    response = client.post("/identify", **request_args)
    assert response.status_code == status, response.text
    assert response.get_json()["error"]["code"] == code and response.get_json()["error"]["message"]
    assert client.get("/health").get_json()["tracks"] == 1


def test_too_long_a_query_and_an_unknown_track(client, tmp_path):
    long = write(tmp_path / "long.wav", song(9, seconds=31)).read_bytes()
    r = client.post("/identify", data=long)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_long"
    r = client.get("/tracks/999")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "track_not_found"


@pytest.mark.postgresql
def test_changes_need_the_admin_token(client, songs_dir):
    with open(songs_dir / "song0.flac", "rb") as fh:
        r = client.post("/tracks", data={"audio": fh})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    track = _upload(client, songs_dir / "song0.flac")["track"]
    assert client.delete(f"/tracks/{track['id']}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.delete(f"/tracks/{track['id']}", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["removed"]["id"] == track["id"]
    assert client.get("/tracks").get_json()["tracks"] == []


def test_without_an_admin_token_changes_are_refused(tmp_path, songs_dir):
    client = create_app(load_config(data_dir=tmp_path / "data", admin_token="")).test_client()
    with open(songs_dir / "song0.flac", "rb") as fh:
        r = client.post("/tracks", data={"audio": fh}, headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "admin_disabled"
    assert client.get("/tracks").get_json()["tracks"] == []


@pytest.mark.postgresql
def test_only_the_admin_sees_server_paths(client, songs_dir):
    path = songs_dir / "song4.flac"
    track = _upload(client, path)["track"]
    assert track["source"] == str(path)  # the admin uploaded it
    public = [client.get("/tracks").get_json()["tracks"][0], client.get(f"/tracks/{track['id']}").get_json(),
              client.post("/identify", data=path.read_bytes()).get_json()["matches"][0]["track"],
              client.get(f"/tracks/{track['id']}/similar").get_json()["track"]]
    assert [t["source"] for t in public] == ["song4.flac"] * 4
    assert client.get("/tracks", headers=AUTH).get_json()["tracks"][0]["source"] == str(path)


def test_links_follow_the_proxy_prefix(client, songs_dir):
    track = _upload(client, songs_dir / "song3.flac")["track"]
    assert track["url"] == f"/tracks/{track['id']}"
    behind = client.get("/tracks", headers={
        "X-Forwarded-Prefix": "/ear", "X-Forwarded-Host": "example.org", "X-Forwarded-Proto": "https"})
    assert behind.get_json()["tracks"][0]["url"] == f"/ear/tracks/{track['id']}"
    page = client.get("/", headers={"X-Forwarded-Prefix": "/ear"}).text
    assert 'src="/ear/widget.js"' in page and "data-ear" in page and "1 tracks" in page


def _links(value) -> list[str]:
    if isinstance(value, dict):
        return [link for k, v in value.items() for link in ([v] if k.endswith("url") else _links(v))]
    return [link for v in value for link in _links(v)] if isinstance(value, list) else []


@pytest.mark.parametrize("public_url", ["", "https://example.org/ear/"])
def test_links_never_come_from_the_host_header(tmp_path, songs_dir, public_url):
    config = load_config(data_dir=tmp_path / "data", admin_token="test-token", allow_playback=True,
                         public_url=public_url)
    client = create_app(config).test_client()
    track_id = _upload(client, songs_dir / "song3.flac")["track"]["id"]
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    answers = [client.get("/tracks", headers=forged), client.get(f"/tracks/{track_id}", headers=forged),
               client.post("/identify?candidates=2", headers=forged,
                           data=(songs_dir / "song3.flac").read_bytes())]
    links = [link for r in answers for link in _links(r.get_json())]
    root = public_url.rstrip("/")
    # /tracks and /tracks/<id>: the track's url; /identify: audio_url of the match and candidate
    assert links == [f"{root}/tracks/{track_id}"] * 2 + [f"{root}/tracks/{track_id}/audio"] * 2


def test_widget_audio_feedback_and_cors(playback_client, songs_dir, tmp_path):
    client = playback_client
    widget = client.get("/widget.js")
    assert widget.status_code == 200 and "javascript" in widget.headers["Content-Type"]
    assert len(widget.data) <= 25 * 1024 and "attachShadow" in widget.text

    track = _upload(client, songs_dir / "song3.flac")["track"]
    whole = (songs_dir / "song3.flac").read_bytes()
    part = client.get(f"/tracks/{track['id']}/audio", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == whole[1000:2000]
    answer = client.post("/identify", data={"audio": (io.BytesIO(whole), "song3.flac")}).get_json()
    assert answer["matches"][0]["track"]["audio_url"].endswith(f"/tracks/{track['id']}/audio")

    sent = client.post("/feedback", json={"query_id": answer["query_id"], "track_id": track["id"],
                                          "verdict": "wrong", "actual": "my own song", "offset_s": 3.5,
                                          "confidence": 0.4},
                       headers={"Origin": DEV_ORIGIN})
    assert sent.status_code == 201 and sent.headers["Access-Control-Allow-Origin"] == DEV_ORIGIN
    for bad in ({"verdict": "maybe"}, {"verdict": "right", "track_id": "x", "query_id": answer["query_id"]},
                ["right"]):
        r = client.post("/feedback", json=bad)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_feedback"
    db = tmp_path / "data" / "ear.sqlite3"
    rows = sqlite3.connect(db).execute("select track_id, verdict, actual from feedback").fetchall()
    assert rows == [(track["id"], "wrong", "my own song")]

    preflight = client.options("/feedback", headers={"Origin": DEV_ORIGIN,
                                                     "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("Access-Control-Allow-Origin") == DEV_ORIGIN
    other = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_playback_and_cors_are_off_unless_allowed(client, songs_dir):
    track = _upload(client, songs_dir / "song1.flac")["track"]
    r = client.get(f"/tracks/{track['id']}/audio")
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "playback_disabled"
    assert "Access-Control-Allow-Origin" not in client.get("/health", headers={"Origin": DEV_ORIGIN}).headers


def test_cover_image_of_a_track_that_has_one(client, songs_dir, tmp_path):
    cover = tmp_path / "cover.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1",
                    str(cover)], check=True)
    tagged = tmp_path / "with-cover.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(songs_dir / "song5.flac"), "-i", str(cover),
                    "-map", "0:a", "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-id3v2_version", "3",
                    "-disposition:v", "attached_pic", str(tagged)], check=True)
    ids = [_upload(client, path)["track"]["id"] for path in (tagged, songs_dir / "song2.flac")]
    query = tmp_path / "q.mp3"  # 10 s of the tagged file (the whole one is over the query limit)
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "5", "-t", "10", "-i", str(tagged), "-map", "0:a",
                    str(query)], check=True)
    track = client.post("/identify", data=query.read_bytes()).get_json()["matches"][0]["track"]
    assert track["id"] == ids[0] and track["cover_url"].endswith(f"/tracks/{ids[0]}/cover")
    image = client.get(f"/tracks/{ids[0]}/cover")
    assert image.headers["Content-Type"] == "image/png" and image.data == cover.read_bytes()
    plain = client.post("/identify", data=(songs_dir / "song2.flac").read_bytes()).get_json()
    assert "cover_url" not in plain["matches"][0]["track"]
    assert client.get(f"/tracks/{ids[1]}/cover").status_code == 404
