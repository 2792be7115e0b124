"""The widget in headless Chromium (Debian's), on the example site behind the real Nginx, with a
fake microphone playing a WAV file: it records, uploads through /ear/, and shows the answer."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from helpers import AUTH, REPO, free_port, job_done, start_gunicorn, start_nginx, stop_nginx, wait_until_up
from playwright.sync_api import expect, sync_playwright
from synth import beat, hummed, song, tune, video, write

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def site_behind_nginx(gunicorn_server):
    yield from _site(gunicorn_server)


@pytest.fixture
def playing_site_behind_nginx(tmp_path):
    """The same, with ear allowed to play its tracks (▶)."""
    for server in start_gunicorn(tmp_path, EAR_ALLOW_PLAYBACK="true"):
        yield from _site(server)


def _site(gunicorn_server):
    port = free_port()
    # The example site as in production (no debug): Nginx, not the site, serves /ear/.
    site = subprocess.Popen([sys.executable, "-m", "flask", "--app", str(REPO / "projects/site/app.py"),
                             "run", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, prefix = start_nginx(gunicorn_server.port, site_port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the example site did not start"
        time.sleep(0.2)
    yield url, gunicorn_server
    stop_nginx(prefix)
    site.terminate()
    site.wait(timeout=10)


def _microphone_file(audio: np.ndarray, path: Path) -> Path:
    sf.write(path, audio.astype(np.float32), 44100, subtype="PCM_16")
    return path


def _page(p, wav: Path | None):
    args = ["--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
    if wav is not None:  # the permission prompt is answered "allow" only when a file is given
        args += ["--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
    return browser, browser.new_page()


def test_widget_records_and_shows_the_track(site_behind_nginx, songs_dir, tmp_path):
    url, server = site_behind_nginx
    for name in ("song3", "song1"):
        with open(songs_dir / f"{name}.flac", "rb") as fh:
            job_done(url + "/ear", requests.post(url + "/ear/tracks", files={"audio": fh}, headers=AUTH,
                                                 timeout=60))
    wav = _microphone_file(song(3)[44100 * 6: 44100 * 26], tmp_path / "mic.wav")
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as p:
        browser, page = _page(p, wav)
        page.goto(url + "/")
        page.get_by_role("button", name="Listen").click()
        status = page.get_by_role("status")
        expect(status).to_contain_text("Found: song3", timeout=40_000)
        expect(page.locator(".title")).to_have_text("song3")
        expect(page.locator(".similar li")).to_have_text(["song1"], timeout=10_000)  # more like it
        page.screenshot(path=str(ARTIFACTS / "widget-found.png"))
        page.get_by_role("button", name="Yes").click()
        expect(status).to_contain_text("Thank you", timeout=10_000)
        browser.close()
    with sqlite3.connect(server.data_dir / "ear.sqlite3") as db:  # on the answer shown, by its id
        [(query_id, verdict)] = db.execute("select query_id, verdict from feedback").fetchall()
    assert len(query_id) >= 22 and verdict == "right"
    print(f"\nbrowser test (record, upload, answer, feedback): {time.monotonic() - started:.1f} s")


def test_widget_answers_while_still_listening(site_behind_nginx, songs_dir, tmp_path):
    url, server = site_behind_nginx
    with open(songs_dir / "song2.flac", "rb") as fh:
        job_done(url + "/ear", requests.post(url + "/ear/tracks", files={"audio": fh}, headers=AUTH, timeout=60))
    wav = _microphone_file(song(2)[44100 * 4: 44100 * 24], tmp_path / "mic.wav")
    with sync_playwright() as p:
        browser, page = _page(p, wav)
        page.goto(url + "/")
        page.get_by_role("button", name="Listen").click()
        clicked = page.evaluate("performance.now()")
        status = page.get_by_role("status")
        expect(status).to_contain_text("Found: song2", timeout=40_000)
        answered_s = (page.evaluate("performance.now()") - clicked) / 1000
        widget = page.locator("[data-ear]")
        uploads, heard = int(widget.get_attribute("data-uploads")), float(widget.get_attribute("data-heard"))
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()  # the recording ended
        browser.close()
    print(f"\nanswered while listening: after {answered_s:.1f} s, on {heard:.1f} s of audio "
          f"of an 8 s recording, {uploads} upload(s)")
    assert heard < 7.5, "the answer waited for the whole recording"


def test_widget_says_no_match(site_behind_nginx, tmp_path):
    url, server = site_behind_nginx
    wav = _microphone_file(song(301)[: 44100 * 20], tmp_path / "mic.wav")  # not in the catalog
    with sync_playwright() as p:
        browser, page = _page(p, wav)
        page.goto(url + "/")
        page.get_by_role("button", name="Listen").click()
        expect(page.get_by_role("status")).to_contain_text("No match", timeout=40_000)
        browser.close()


def test_widget_hum_mode_finds_the_beat_and_plays_from_the_melody(playing_site_behind_nginx, tmp_path):
    url, server = playing_site_behind_nginx
    for seed in (0, 1):
        path = write(tmp_path / f"beat{seed}.flac", beat(tune(seed), 90.0 + 8 * seed, seed))
        with open(path, "rb") as fh:
            job_done(url + "/ear", requests.post(url + "/ear/tracks", files={"audio": fh}, headers=AUTH,
                                                 timeout=60))
    # The fake microphone plays the hum (10 s of tune 1, a fifth up and a little slower) and
    # then loops it; the page records 12 s.
    wav = _microphone_file(hummed(tune(1), 10, 14, 98.0 * 0.9, 7, 1), tmp_path / "hum.wav")
    melody_at = (tune(1)[10][0] + 4) * 60 / 98.0  # where the hummed notes are in the beat
    with sync_playwright() as p:
        browser, page = _page(p, wav)
        page.goto(url + "/beats")
        expect(page.get_by_text("Hum or sing the hook")).to_be_visible()
        page.get_by_role("button", name="Hum").click()
        status = page.get_by_role("status")
        expect(status).to_contain_text("Found: beat1", timeout=40_000)
        page.get_by_role("button", name="Why?").click()  # the hum over the beat's melody
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=page.locator(".why img").element_handle(),
                               timeout=5_000)
        page.screenshot(path=str(ARTIFACTS / "widget-hum.png"), full_page=True)
        page.get_by_role("button", name="Play from here").click()
        audio = page.locator("audio")
        page.wait_for_function(f"a => !a.paused && Math.abs(a.currentTime - {melody_at:.2f}) < 3",
                               arg=audio.element_handle(), timeout=10_000)
        browser.close()


def test_widget_shows_the_video_frame_of_the_moment_follows_it_while_playing_and_why(playing_site_behind_nginx, tmp_path):
    url, server = playing_site_behind_nginx
    sound = song(11, seconds=60.0)
    path = video(tmp_path / "pattern.mp4", sound, ["-c:v", "mpeg4", "-q:v", "8", "-c:a", "aac"])
    with open(path, "rb") as fh:
        job_done(url + "/ear", requests.post(url + "/ear/tracks", files={"audio": fh}, headers=AUTH, timeout=60))
    wav = _microphone_file(sound[44100 * 40: 44100 * 52], tmp_path / "mic.wav")  # from 40 s on
    with sync_playwright() as p:
        browser, page = _page(p, wav)
        page.goto(url + "/")
        page.get_by_role("button", name="Listen").click()
        expect(page.get_by_role("status")).to_contain_text("Found: pattern", timeout=40_000)
        frame = page.locator("img.frame")
        expect(frame).to_be_visible()
        page.wait_for_function("f => f.complete && f.naturalWidth === 320", arg=frame.element_handle(), timeout=10_000)
        shown = int(frame.get_attribute("src").rpartition("t=")[2])
        assert 39 <= shown <= 53, shown  # the microphone's file starts at 40 s of the track, and loops
        page.get_by_role("button", name="Why?").click()
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=page.locator(".why img").element_handle(),
                               timeout=5_000)
        page.screenshot(path=str(ARTIFACTS / "widget-frame.png"), full_page=True)
        page.get_by_role("button", name="Play from here").click()
        page.wait_for_function(f"f => +f.src.split('t=')[1] >= {shown + 2} && f.complete && f.naturalWidth === 320",
                               arg=frame.element_handle(), timeout=15_000)
        browser.close()


def test_widget_explains_a_denied_microphone(site_behind_nginx):
    url, server = site_behind_nginx
    with sync_playwright() as p:
        browser, page = _page(p, None)
        page.goto(url + "/")
        page.get_by_role("button", name="Listen").click()
        expect(page.get_by_role("status")).to_contain_text("permission was denied", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "widget-denied.png"))
        browser.close()


def test_widget_on_another_origin_plays_from_ear_and_sends_feedback(tmp_path, songs_dir):
    """The widget embedded from ear's own address in a page elsewhere (another origin): ear's
    links are paths from its root, and the widget resolves them against ear, not the page."""
    page_port = free_port()
    elsewhere = f"http://localhost:{page_port}"
    gen = start_gunicorn(tmp_path, EAR_ALLOW_PLAYBACK="true", EAR_CORS_ORIGINS=elsewhere)
    server = next(gen)
    (tmp_path / "www").mkdir()
    (tmp_path / "www/index.html").write_text(
        f'<!doctype html><script src="{server.url}/widget.js" defer></script><div data-ear></div>')
    static = subprocess.Popen([sys.executable, "-m", "http.server", str(page_port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path / "www")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(songs_dir / "song3.flac", "rb") as fh:
            added = requests.post(server.url + "/tracks", files={"audio": fh}, headers=AUTH, timeout=60,
                                  data={"source": str(songs_dir / "song3.flac")})  # played from there
        track_id = job_done(server.url, added)["track"]["id"]
        wav = _microphone_file(song(3)[44100 * 6: 44100 * 16], tmp_path / "clip.wav")
        wait_until_up(elsewhere + "/", static, tmp_path / "www/index.html")
        with sync_playwright() as p:
            browser, page = _page(p, None)
            page.goto(elsewhere + "/")
            page.locator("input[type=file]").set_input_files(wav)
            status = page.get_by_role("status")
            expect(status).to_contain_text("Found: song3", timeout=40_000)
            page.get_by_role("button", name="Play from here").click()
            audio = page.locator("audio")
            expect(audio).to_have_attribute("src", f"{server.url}/tracks/{track_id}/audio")
            page.wait_for_function("a => !a.paused && a.currentTime > 6", arg=audio.element_handle(),
                                   timeout=10_000)  # it plays, from where the clip was
            page.get_by_role("button", name="Yes").click()
            expect(status).to_contain_text("Thank you", timeout=10_000)
            browser.close()
    finally:
        static.terminate()
        static.wait(timeout=10)
        next(gen, None)


def test_dashboard_signs_in_uploads_and_shows_feedback(site_behind_nginx, songs_dir, tmp_path):
    """The owner's room behind Nginx: a wrong key refused, sign-in, an upload through the job
    queue shown finishing, a listener's verdict moving the precision, a form without its token
    refused; a screenshot of each page (light, dark, a phone's width)."""
    url, server = site_behind_nginx
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _page(p, None)
        page.goto(url + "/ear/admin/")
        page.get_by_label("The admin token, or your key").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("wrong or was revoked")
        page.get_by_label("The admin token, or your key").fill("test-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Catalog")).to_be_visible()

        page.locator("#files").set_input_files(songs_dir / "song3.flac")
        expect(page.locator("#jobs")).to_contain_text("done: track #", timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "admin-catalog-upload.png"), full_page=True)
        page.reload()
        expect(page.get_by_label("title of #", exact=False)).to_have_value("song3")
        track_id = int(page.locator("#tracks tbody tr").get_attribute("data-id"))

        page.goto(url + "/ear/admin/quality")
        expect(page.locator("#precision")).to_have_text("—")
        clip = (tmp_path / "clip.wav")
        sf.write(clip, song(3)[44100 * 5: 44100 * 13], 44100)
        answer = requests.post(url + "/ear/identify", data=clip.read_bytes(), timeout=60).json()
        assert answer["matches"][0]["track"]["id"] == track_id
        verdict = {"query_id": answer["query_id"], "verdict": "right", "track_id": track_id}
        assert requests.post(url + "/ear/feedback", json=verdict, timeout=10).status_code == 201
        page.reload()
        expect(page.locator("#precision")).to_have_text("100%")
        page.screenshot(path=str(ARTIFACTS / "admin-quality.png"), full_page=True)

        forged = page.evaluate("""base => fetch(base + "admin/signout", {method: "POST"}).then(r => r.status)""",
                               url + "/ear/")
        assert forged == 403  # a POST without the form's token
        assert page.evaluate(f"""() => fetch("{url}/ear/tracks/{track_id}", {{method: "DELETE"}})
                                 .then(r => r.status)""") == 401  # the cookie alone opens nothing
        page.emulate_media(color_scheme="dark")
        page.goto(url + "/ear/admin/activity")
        expect(page.locator("svg.plot").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "admin-activity-dark.png"), full_page=True)
        page.set_viewport_size({"width": 375, "height": 800})
        page.goto(url + "/ear/admin/models")
        page.screenshot(path=str(ARTIFACTS / "admin-models-phone.png"), full_page=True)
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        browser.close()
