"""The HTTP API on a real Gunicorn, started from deploy/gunicorn.conf.py."""
from __future__ import annotations

import subprocess
import sys
import threading

import requests
from synth import encode, song, write

AUTH = {"Authorization": "Bearer test-token"}


def _upload(server, path, **fields):
    with open(path, "rb") as fh:
        return requests.post(server.url + "/tracks", files={"audio": (path.name, fh)},
                             data=fields, headers=AUTH, timeout=60)


def test_identify_by_multipart_and_raw_body(gunicorn_server, songs_dir, tmp_path):
    server = gunicorn_server
    r = _upload(server, songs_dir / "song2.flac", title="Two", artist="Synth", genre="Test")
    assert r.status_code == 201 and r.json()["created"] is True
    track = r.json()["track"]
    assert track["title"] == "Two" and track["artist"] == "Synth"
    assert _upload(server, songs_dir / "song2.flac").status_code == 200  # already there

    query = encode(write(tmp_path / "q.wav", song(2)[44100 * 9: 44100 * 17]), tmp_path / "q.mp4",
                   "-c:a", "aac")
    for response in (
        requests.post(server.url + "/identify", files={"audio": ("q.mp4", query.read_bytes())}, timeout=60),
        requests.post(server.url + "/identify", data=query.read_bytes(), timeout=60,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}),  # curl --data-binary
    ):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["matches"][0]["track"]["id"] == track["id"]
        assert abs(body["matches"][0]["offset_s"] - 9.0) <= 0.1
        assert abs(body["query_seconds"] - 8.0) < 0.1 and body["elapsed_ms"] > 0
        assert "candidates" not in body

    ranked = requests.post(server.url + "/identify?candidates=3", data=query.read_bytes(), timeout=60)
    assert ranked.status_code == 200, ranked.text
    assert ranked.json()["candidates"][0]["track"]["id"] == track["id"]
    assert "confirmed" not in ranked.json()["candidates"][0]  # it is the match

    assert requests.get(server.url + f"/tracks/{track['id']}", timeout=10).json()["title"] == "Two"
    assert requests.get(server.url + "/health", timeout=10).json()["tracks"] == 1


def test_bad_input_gets_json_errors_and_loses_nothing(gunicorn_server, songs_dir, tmp_path):
    server = gunicorn_server
    assert _upload(server, songs_dir / "song1.flac").status_code == 201

    def identify(data, **kw):
        return requests.post(server.url + "/identify", data=data, timeout=60, **kw)

    cases = {
        "empty": identify(b""),
        "not_audio": identify(b"<html>not audio</html>" * 20),
        "upload_too_large": identify(b"\0" * (51 * 1024 * 1024)),
        "too_long": identify(write(tmp_path / "long.wav", song(9, seconds=31)).read_bytes()),
        "missing_audio": requests.post(server.url + "/identify", files={"file": ("x", b"abc")}, timeout=10),
        "bad_parameter": requests.post(server.url + "/identify?candidates=many", timeout=10,
                                       data=(songs_dir / "song1.flac").read_bytes()),
    }
    statuses = {"empty": 400, "not_audio": 415, "upload_too_large": 413, "too_long": 413,
                "missing_audio": 400, "bad_parameter": 400}
    for code, response in cases.items():
        assert response.status_code == statuses[code], (code, response.text)
        assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    assert requests.get(server.url + "/tracks/999", timeout=10).status_code == 404
    assert requests.get(server.url + "/health", timeout=10).json()["tracks"] == 1


def test_changes_need_the_admin_token(gunicorn_server, songs_dir):
    server = gunicorn_server
    with open(songs_dir / "song0.flac", "rb") as fh:
        r = requests.post(server.url + "/tracks", files={"audio": fh}, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    track = _upload(server, songs_dir / "song0.flac").json()["track"]
    assert requests.delete(server.url + f"/tracks/{track['id']}", timeout=10,
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = requests.delete(server.url + f"/tracks/{track['id']}", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["removed"]["id"] == track["id"]
    assert requests.get(server.url + "/tracks", timeout=10).json()["tracks"] == []


def test_links_follow_the_proxy_prefix(gunicorn_server, songs_dir):
    server = gunicorn_server
    track = _upload(server, songs_dir / "song3.flac").json()["track"]
    assert track["url"] == f"{server.url}/tracks/{track['id']}"
    behind = requests.get(server.url + "/tracks", timeout=10, headers={
        "X-Forwarded-Prefix": "/ear", "X-Forwarded-Host": "example.org", "X-Forwarded-Proto": "https"})
    assert behind.json()["tracks"][0]["url"] == f"https://example.org/ear/tracks/{track['id']}"


def test_identify_keeps_answering_while_the_cli_ingests(gunicorn_server, songs_dir, tmp_path):
    server = gunicorn_server
    assert _upload(server, songs_dir / "song4.flac").status_code == 201
    query = write(tmp_path / "q.wav", song(4)[44100 * 5: 44100 * 11]).read_bytes()
    ingest = subprocess.Popen([sys.executable, "-m", "ear.cli", "--data-dir", str(server.data_dir),
                               "ingest", str(songs_dir)], stdout=subprocess.PIPE, text=True)
    answers = []

    def ask():
        while ingest.poll() is None or len(answers) < 5:
            answers.append(requests.post(server.url + "/identify", data=query, timeout=60))

    asker = threading.Thread(target=ask)
    asker.start()
    out, _ = ingest.communicate(timeout=300)
    asker.join(timeout=120)
    assert ingest.returncode == 0 and out.count("added") == 5
    assert answers and all(a.status_code == 200 for a in answers)
    assert all(a.json()["matches"][0]["track"]["title"] == "song4" for a in answers)
    assert requests.get(server.url + "/health", timeout=10).json()["tracks"] == 6


def test_without_an_admin_token_changes_are_refused(tmp_path, songs_dir):
    from ear.app import create_app
    from ear.config import load_config

    client = create_app(load_config(data_dir=tmp_path / "data", admin_token="")).test_client()
    with open(songs_dir / "song0.flac", "rb") as fh:
        r = client.post("/tracks", data={"audio": fh}, headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "admin_disabled"
    assert client.get("/tracks").get_json()["tracks"] == []
