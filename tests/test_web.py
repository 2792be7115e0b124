"""What the browser gets from ear (real Gunicorn): the widget, the demo page, ranged audio for the
play button, feedback stored in SQLite, and CORS only for the origins configured."""
from __future__ import annotations

import sqlite3
import subprocess

import requests
from conftest import start_gunicorn

from ear.config import load_config

AUTH = {"Authorization": "Bearer test-token"}
DEV_ORIGIN = "http://localhost:8000"


def test_widget_demo_audio_feedback_and_cors(tmp_path, songs_dir):
    gen = start_gunicorn(tmp_path, EAR_ALLOW_PLAYBACK="true", EAR_CORS_ORIGINS=DEV_ORIGIN)
    server = next(gen)
    try:
        widget = requests.get(server.url + "/widget.js", timeout=10)
        assert widget.ok and "javascript" in widget.headers["Content-Type"]
        assert len(widget.content) <= 25 * 1024 and "attachShadow" in widget.text
        page = requests.get(server.url + "/", timeout=10,
                            headers={"X-Forwarded-Prefix": "/ear"}).text
        assert 'src="/ear/widget.js"' in page and "data-ear" in page

        with open(songs_dir / "song3.flac", "rb") as fh:
            track = requests.post(server.url + "/tracks", files={"audio": fh}, headers=AUTH,
                                  data={"source": str(songs_dir / "song3.flac")}, timeout=60).json()["track"]
        whole = (songs_dir / "song3.flac").read_bytes()
        part = requests.get(server.url + f"/tracks/{track['id']}/audio", timeout=10,
                            headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == whole[1000:2000]

        clip = whole  # the whole song as a query: the answer carries where to play it from
        answer = requests.post(server.url + "/identify", files={"audio": clip}, timeout=60).json()
        assert answer["matches"][0]["track"]["audio_url"].endswith(f"/tracks/{track['id']}/audio")

        sent = requests.post(server.url + "/feedback", json={
            "track_id": track["id"], "verdict": "wrong", "actual": "my own song", "offset_s": 3.5,
            "confidence": 0.4}, timeout=10, headers={"Origin": DEV_ORIGIN})
        assert sent.status_code == 201
        assert sent.headers["Access-Control-Allow-Origin"] == DEV_ORIGIN
        bad = requests.post(server.url + "/feedback", json={"verdict": "maybe"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_feedback"
        db = load_config(data_dir=server.data_dir).db_path
        rows = sqlite3.connect(db).execute("select track_id, verdict, actual from feedback").fetchall()
        assert rows == [(track["id"], "wrong", "my own song")]

        preflight = requests.options(server.url + "/feedback", timeout=10, headers={
            "Origin": DEV_ORIGIN, "Access-Control-Request-Method": "POST"})
        assert preflight.headers.get("Access-Control-Allow-Origin") == DEV_ORIGIN
        other = requests.get(server.url + "/health", headers={"Origin": "http://evil.example"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        next(gen, None)


def test_playback_is_off_unless_allowed(gunicorn_server, songs_dir):
    with open(songs_dir / "song1.flac", "rb") as fh:
        track = requests.post(gunicorn_server.url + "/tracks", files={"audio": fh}, headers=AUTH,
                              data={"source": str(songs_dir / "song1.flac")}, timeout=60).json()["track"]
    r = requests.get(gunicorn_server.url + f"/tracks/{track['id']}/audio", timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "playback_disabled"
    assert "Access-Control-Allow-Origin" not in requests.get(
        gunicorn_server.url + "/health", headers={"Origin": DEV_ORIGIN}, timeout=10).headers


def test_cover_image_of_a_track_that_has_one(gunicorn_server, songs_dir, tmp_path):
    cover = tmp_path / "cover.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1",
                    str(cover)], check=True)
    tagged = tmp_path / "with-cover.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(songs_dir / "song5.flac"), "-i", str(cover),
                    "-map", "0:a", "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-id3v2_version", "3",
                    "-disposition:v", "attached_pic", str(tagged)], check=True)
    url = gunicorn_server.url
    ids = []
    for path in (tagged, songs_dir / "song2.flac"):
        with open(path, "rb") as fh:
            ids.append(requests.post(url + "/tracks", files={"audio": fh}, headers=AUTH,
                                     data={"source": str(path)}, timeout=60).json()["track"]["id"])
    query = tmp_path / "q.mp3"  # 10 s of the tagged file (the whole one is over the query limit)
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "5", "-t", "10", "-i", str(tagged), "-map", "0:a",
                    str(query)], check=True)
    answer = requests.post(url + "/identify", files={"audio": query.read_bytes()}, timeout=60).json()
    track = answer["matches"][0]["track"]
    assert track["id"] == ids[0] and track["cover_url"].endswith(f"/tracks/{ids[0]}/cover")
    image = requests.get(track["cover_url"], timeout=10)
    assert image.headers["Content-Type"] == "image/png" and image.content == cover.read_bytes()
    plain = requests.post(url + "/identify", files={"audio": (songs_dir / "song2.flac").read_bytes()},
                          timeout=60).json()["matches"][0]["track"]
    assert "cover_url" not in plain
    assert requests.get(url + f"/tracks/{ids[1]}/cover", timeout=10).status_code == 404
