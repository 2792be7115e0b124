"""The owner's room, /admin/, through Flask's test client: sign-in with the admin token or a
user's key (a wrong or revoked one refused), forms without the session's token refused, the
signed-in browser as a caller of the JSON API only with the page's token, a user's pages
showing only their library, markup in titles escaped, and PATCH /tracks/<id>. In Chromium
behind Nginx: test_browser."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import AUTH, added, work

from ear import users
from ear.embed import MODEL_PATH
from ear.routes.signin import HEADER


def _form_token(page) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)


def _sign_in(client, key: str):
    token = _form_token(client.get("/admin/signin"))
    return client.post("/admin/signin", data={"key": key, "form_token": token})


def _add(client, path, headers=AUTH, **fields) -> dict:
    with open(path, "rb") as fh:
        return added(client, {"audio": fh, **fields}, headers=headers)["track"]


@pytest.mark.postgresql
def test_sign_in_with_the_admin_token_and_out(app, client):
    assert client.get("/admin/activity").headers["Location"].endswith("/admin/signin")
    refused = _sign_in(client, "not-the-token")
    assert refused.status_code == 401 and "wrong or was revoked" in refused.text
    no_form = client.post("/admin/signin", data={"key": "test-token"})  # a form from elsewhere
    assert no_form.status_code == 403 and no_form.get_json()["error"]["code"] == "form_expired"
    signed = _sign_in(client, "test-token")
    assert signed.status_code == 302 and signed.headers["Location"].endswith("/admin/catalog")
    cookie = signed.headers["Set-Cookie"]
    assert "ear_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for page in ("catalog", "activity", "quality", "models"):
        response = client.get(f"/admin/{page}")
        assert response.status_code == 200 and "Sign out" in response.text, page
    assert client.post("/admin/signout", data={}).status_code == 403  # without the token: refused
    copied = app.test_client()  # the same cookie in another browser (or a thief's)
    copied.set_cookie("ear_session", client.get_cookie("ear_session", path="/").value)
    assert copied.get("/admin/catalog").status_code == 200
    token = _form_token(client.get("/admin/catalog"))
    assert client.post("/admin/signout", data={"form_token": token}).status_code == 302
    assert client.get("/admin/catalog").status_code == 302  # back to the sign-in
    assert copied.get("/admin/catalog").status_code == 302  # signing out ended it too


def test_sign_in_attempts_are_limited_per_address(client):
    token = _form_token(client.get("/admin/signin"))
    statuses = [client.post("/admin/signin", data={"key": f"guess{n}", "form_token": token}).status_code
                for n in range(6)]
    assert statuses == [401] * 5 + [429]


def test_the_session_calls_the_api_only_with_the_pages_token(app, client, songs_dir):
    track = _add(client, songs_dir / "song1.flac")
    _sign_in(client, "test-token")
    token = _form_token(client.get("/admin/catalog"))
    # The widget's calls from the same browser carry no token: a visitor's, which may not remove.
    assert client.delete(f"/tracks/{track['id']}").status_code == 401
    assert client.delete(f"/tracks/{track['id']}", headers={HEADER: "forged"}).status_code == 401
    changed = client.patch(f"/tracks/{track['id']}", json={"title": "Renamed", "genre": "ambient"},
                           headers={HEADER: token})
    assert changed.status_code == 200 and (changed.get_json()["title"], changed.get_json()["genre"]) == (
        "Renamed", "ambient")
    bad = client.patch(f"/tracks/{track['id']}", json={"title": " "}, headers={HEADER: token})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_metadata"
    for body in ('{"source": "/etc/passwd"}', '{"title": "a\\u0000b"}', '{"title": "a\\ud800b"}',
                 '{"artist": 7}', "[" * 100_000, "not json"):
        bad = client.patch(f"/tracks/{track['id']}", data=body, headers={HEADER: token})
        assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_metadata", body[:40]
    assert client.get(f"/tracks/{track['id']}").get_json()["title"] == "Renamed"  # nothing lost
    assert client.delete(f"/tracks/{track['id']}", headers={HEADER: token}).status_code == 200


def test_a_user_sees_only_their_library_until_revoked(app, client, songs_dir):
    _, key = users.add("ann")
    _add(client, songs_dir / "song2.flac", headers={"Authorization": f"Bearer {key}"},
         title="<script>alert(1)</script>")
    _add(client, songs_dir / "song3.flac", title="the owner's")
    owners_answer = client.post("/identify", data=(songs_dir / "song3.flac").read_bytes()).get_json()
    assert owners_answer["matches"]  # a visitor's query: the owner's library, and its log
    assert _sign_in(client, key).status_code == 302
    activity = client.get("/admin/activity").text
    assert "No queries yet" in activity and "the owner" not in activity
    page = client.get("/admin/catalog").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "the owner" not in page and "every library" not in page  # no library chooser
    token = _form_token(client.get("/admin/catalog"))
    listed = client.get("/tracks", headers={HEADER: token}).get_json()["tracks"]
    assert [t["library"] for t in listed] == ["ann"]
    users.revoke("ann")
    assert client.get("/admin/catalog").status_code == 302  # the key no longer opens: signed out
    now = client.get("/tracks", headers={HEADER: token}).get_json()["tracks"]
    assert [t["library"] for t in now] == ["owner"]  # a visitor's: the public library


def test_pages_draw_their_figures(app, client, songs_dir, tmp_path):
    from synth import song, write
    track = _add(client, songs_dir / "song4.flac")
    clip = write(tmp_path / "clip.wav", song(4)[44100 * 10: 44100 * 18]).read_bytes()
    for verdict in ("right", "wrong"):
        query_id = client.post("/identify", data=clip).get_json()["query_id"]
        client.post("/feedback", json={"query_id": query_id, "verdict": verdict, "track_id": track["id"]})
    _sign_in(client, "test-token")
    activity = client.get("/admin/activity?days=7").text
    assert activity.count("<svg") == 2 and "song4" in activity and "100% answered" in activity
    for bad, status in (("/admin/catalog?page=2", 400), ("/admin/catalog?page=x", 400),
                        ("/admin/activity?days=abc", 400), ("/admin/queries/%00/audio", 404),
                        (f"/admin/queries/{query_id}/audio", 404)):  # no audio kept: none to play
        response = client.get(bad)
        assert response.status_code == status and response.get_json()["error"]["code"], bad
    quality = client.get("/admin/quality").text
    assert '<b id="precision">50%</b>' in quality and quality.count("<circle") == 1


def test_the_models_page_shows_figures_to_the_admin_who_alone_chooses(app, client, songs_dir, config):
    _add(client, songs_dir / "song5.flac")
    version = config.data_dir / "models" / "v1"
    version.mkdir(parents=True)
    shutil.copy(MODEL_PATH, version / "ear-embed.pt")
    (version / "figures.json").write_text(json.dumps({"created": "2026-11-30T12:00:00+00:00", "trained_from": "shipped",
        "eval": {"candidate": {"top5_hard": 96.5, "top5_ultra": 71.2, "p10_artist": 50.0, "p10_genre": 60.0},
                 "base": {"top5_hard": 91.0, "top5_ultra": 43.0, "p10_artist": 41.0, "p10_genre": 61.0}}}))
    _, key = users.add("ann")
    _sign_in(client, key)
    page = client.get("/admin/models").text
    assert "v1" in page and "96.5" not in page and "Use v1" not in page  # figures of the owner's music
    refused = client.post("/admin/models/use", data={"version": "v1", "form_token": _form_token(client.get("/admin/models"))})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "admin_only"
    _sign_in(client, "test-token")
    page = client.get("/admin/models").text
    assert "96.5" in page and "(91.0)" in page and page.count("<svg") == 1 and "owner: shipped" in page
    chosen = client.post("/admin/models/use", data={"version": "v1", "form_token": _form_token(client.get("/admin/models"))})
    assert chosen.status_code == 302
    assert work(app) == 1  # the owner's library embedded again
    page = client.get("/admin/models").text
    assert "owner: v1" in page and "Use shipped" in page
    missing = client.post("/admin/models/use", data={"version": "v9", "form_token": _form_token(client.get("/admin/models"))})
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "model_not_found"


@pytest.mark.postgresql
def test_the_catalog_page_searches_in_the_database(app, client, songs_dir):
    _add(client, songs_dir / "song1.flac", title="Night Drive", genre="synthwave")
    _add(client, songs_dir / "song2.flac", title="100% Sun", artist="Ann")
    _sign_in(client, "test-token")

    def titles(query: str) -> list[str]:
        page = client.get("/admin/catalog", query_string={"q": query}).text
        return re.findall(r'name="title" value="([^"]+)"', page)

    assert titles("") == ["100% Sun", "Night Drive"]  # the newest first
    assert titles("NIGHT") == titles("wave") == ["Night Drive"]  # any field, case aside
    assert titles("%") == ["100% Sun"] and titles("_") == []  # wildcards are letters here
    assert titles("song2") == ["100% Sun"]  # the file's name
    assert "No tracks match" in client.get("/admin/catalog?q=nothing").text
