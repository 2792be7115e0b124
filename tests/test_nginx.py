"""ear behind the real Nginx with the shipped `nginx/ear.conf`, in front of a real Gunicorn."""
from __future__ import annotations

import subprocess

import pytest
import requests
from helpers import AUTH, job_done, start_nginx, stop_nginx
from synth import encode, song, write


@pytest.fixture
def site(gunicorn_server):
    url, prefix = start_nginx(gunicorn_server.port)
    yield url, gunicorn_server
    stop_nginx(prefix)


def test_upload_through_nginx_identifies_and_links_carry_the_prefix(site, songs_dir, tmp_path):
    url, server = site
    assert requests.get(url + "/", timeout=10).text.startswith("the personal site")
    with open(songs_dir / "song4.flac", "rb") as fh:
        added = requests.post(url + "/ear/tracks", files={"audio": fh}, headers=AUTH, timeout=60)
    assert added.json()["job"]["url"].startswith("/ear/jobs/")
    track = job_done(url + "/ear", added)["track"]
    assert track["url"] == f"/ear/tracks/{track['id']}"  # from the site's root, on any host name

    query = encode(write(tmp_path / "q.wav", song(4)[44100 * 7: 44100 * 15]), tmp_path / "q.webm",
                   "-c:a", "libopus", "-b:a", "32k")
    out = subprocess.run(["curl", "-sS", "-F", f"audio=@{query}", url + "/ear/identify"],
                         capture_output=True, text=True, check=True, timeout=60)
    answer = requests.models.complexjson.loads(out.stdout)
    assert answer["matches"][0]["track"]["id"] == track["id"]
    assert abs(answer["matches"][0]["offset_s"] - 7.0) <= 0.1

    # A client cannot move ear's links elsewhere: Nginx replaces the forwarded headers, and ear
    # never builds them from the Host header.
    forged = requests.get(url + "/ear/tracks", timeout=10, headers={
        "Host": "evil.example", "X-Forwarded-Prefix": "/evil", "X-Forwarded-Host": "evil.example"})
    assert forged.json()["tracks"][0]["url"] == f"/ear/tracks/{track['id']}"
    assert requests.get(url + "/ear", timeout=10, allow_redirects=False).status_code == 301


def test_upload_over_50_mb_gets_413_from_nginx(site):
    url, server = site
    big = b"\0" * (60 * 1024 * 1024)
    r = requests.post(url + "/ear/identify", data=big, timeout=60,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "upload_too_large"
    assert requests.get(url + "/ear/health", timeout=10).json()["status"] == "ok"


def test_slow_uploads_do_not_hold_the_worker(site):
    """20 clients trickling uploads: Nginx buffers them, so the single Gunicorn worker stays free."""
    import socket
    import threading
    import time

    url, server = site
    host, port = url.removeprefix("http://").split(":")
    body_size = 200_000
    stop = threading.Event()
    sockets = []

    def trickle():
        s = socket.create_connection((host, int(port)))
        sockets.append(s)
        s.sendall((f"POST /ear/identify HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {body_size}\r\n\r\n").encode())
        sent = 0
        while sent < body_size // 2 and not stop.is_set():  # never finishes while we look
            s.sendall(b"\0" * 1000)
            sent += 1000
            time.sleep(0.2)

    threads = [threading.Thread(target=trickle) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(2)
    try:
        for _ in range(5):
            started = time.monotonic()
            # Without request buffering the worker would sit in the first slow upload (20 s).
            assert requests.get(url + "/ear/health", timeout=5).json()["status"] == "ok"
            print(f"/health while 20 uploads trickle: {1000 * (time.monotonic() - started):.0f} ms")
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in sockets:
            s.close()


def test_a_burst_of_feedback_gets_429_json_from_nginx(site, tmp_path):
    url, server = site
    sent = [requests.post(url + "/ear/feedback", json={"verdict": "right"}, timeout=10) for _ in range(15)]
    assert requests.get(url + "/ear/health", timeout=10).json()["status"] == "ok"
    # ear's worker logs each request it answers, before it takes the next (/health above).
    reached = (tmp_path / "gunicorn.log").read_text().count('"POST /feedback ')
    assert 1 <= reached <= 1 + 5  # the first and the burst that ear.conf allows
    limited = [r for r in sent if r.status_code == 429]
    assert len(limited) >= len(sent) - reached  # what Nginx answered itself, and maybe ear once
    for r in limited:
        assert r.headers["Content-Type"].startswith("application/json") and int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["message"]
    assert [r.status_code for r in sent[:5]] == [400] * 5  # let through: ear says no query id
