"""A track's audio: the original ear keeps of an upload (by its SHA-256, written before the
answer, one file for the same bytes, gone with the track) or the file the owner's shell linked.
A request's `source` is a label that is never opened."""
from __future__ import annotations

import hashlib
import io
import sqlite3
import subprocess

import pytest
from helpers import AUTH, added, run_ear

from ear.app import create_app
from ear.config import load_config
from ear.models import shipped_model
from ear.errors import EarError
from ear.ingest import prepare


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def client(data):
    config = load_config(data_dir=data, admin_token="test-token", allow_playback=True)
    return create_app(config).test_client()


def _upload(client, content: bytes, filename: str, **fields) -> dict:
    return added(client, {"audio": (io.BytesIO(content), filename), **fields})


def _kept(data) -> list:
    return sorted(p for p in (data / "originals").rglob("*") if p.is_file())


def test_source_is_a_label_never_a_path_to_open(client, data, songs_dir):
    database = data / "ear.sqlite3"
    for seed, label in ((0, "/etc/passwd"), (1, str(database)), (2, "music/relative.flac")):
        content = (songs_dir / f"song{seed}.flac").read_bytes()
        job = _upload(client, content, f"song{seed}.flac", source=label)
        assert job["status"] == "done", job
        track = job["track"]
        assert client.get(f"/tracks/{track['id']}").get_json()["source"] == label.rsplit("/", 1)[-1]
        played = client.get(f"/tracks/{track['id']}/audio")
        assert played.status_code == 200 and played.data == content  # the upload, nothing else
        assert played.headers["Content-Type"] in ("audio/flac", "audio/x-flac")


def test_an_upload_is_kept_once_by_its_hash_and_goes_with_its_track(client, data, songs_dir, tmp_path):
    content = (songs_dir / "song3.flac").read_bytes()
    first = _upload(client, content, "song3.flac")
    assert first["status"] == "done"
    track_id = first["track"]["id"]
    digest = hashlib.sha256(content).hexdigest()
    assert _kept(data) == [data / "originals" / digest[:2] / f"{digest}.flac"]
    again = _upload(client, content, "copy.flac")
    assert (again["status"], again["error"]["code"], again["track"]["id"]) == ("failed", "duplicate", track_id)
    # The same music in other bytes (WAV): the same track, and its bytes are not kept.
    wav = tmp_path / "song3.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(songs_dir / "song3.flac"), str(wav)], check=True)
    other = _upload(client, wav.read_bytes(), "song3.wav")
    assert (other["error"]["code"], other["track"]["id"]) == ("duplicate", track_id)
    assert _kept(data) == [data / "originals" / digest[:2] / f"{digest}.flac"]
    assert client.delete(f"/tracks/{track_id}", headers=AUTH).status_code == 200
    assert _kept(data) == []


def test_what_is_not_audio_is_not_kept(client, data):
    for content, code in ((b"not audio at all " * 100, "not_audio"), (b"", "empty")):
        refused = _upload(client, content, "notes.txt")
        assert (refused["status"], refused["error"]["code"]) == ("failed", code)
    assert _kept(data) == []


def test_ear_ingest_keeps_a_copy_or_links_the_file(data, songs_dir, tmp_path):
    copied, linked = tmp_path / "copied.flac", tmp_path / "linked.flac"
    copied.write_bytes((songs_dir / "song4.flac").read_bytes())
    linked.write_bytes((songs_dir / "song5.flac").read_bytes())
    run_ear(data, "ingest", str(copied))
    run_ear(data, "ingest", "--link", str(linked))
    assert len(_kept(data)) == 1  # the copy; the linked file stays where it is
    copied.unlink()  # the owner's file may go: ear has its own copy
    out = run_ear(data, "reindex", "--reembed").stdout
    assert "embedded 2 tracks again" in out
    client = create_app(load_config(data_dir=data, allow_playback=True)).test_client()
    ids = [t["id"] for t in client.get("/tracks").get_json()["tracks"]]
    assert [client.get(f"/tracks/{i}/audio").data for i in ids] == [
        (songs_dir / "song4.flac").read_bytes(), linked.read_bytes()]
    linked.unlink()
    assert client.get(f"/tracks/{ids[1]}/audio").status_code == 404


def test_a_track_from_before_originals_is_not_played_until_ingested_again(data, songs_dir):
    """Its row names a server path in `source` only: that path is never opened, and ingesting
    the file again (the same music) gives the track its audio."""
    song = songs_dir / "song2.flac"
    run_ear(data, "ingest", "--link", str(song))
    with sqlite3.connect(data / "ear.sqlite3") as db:  # as an older ear left it
        db.execute("drop index track_original")
        db.execute("alter table track drop column original")
        db.execute("alter table track drop column linked_path")
    client = create_app(load_config(data_dir=data, allow_playback=True)).test_client()
    [track] = client.get("/tracks").get_json()["tracks"]
    assert client.get(f"/tracks/{track['id']}/audio").status_code == 404
    assert "exists" in run_ear(data, "ingest", "--link", str(song)).stdout
    assert client.get(f"/tracks/{track['id']}/audio").data == song.read_bytes()


def test_a_raw_body_is_the_audio_whatever_type_it_is_called(client, data, songs_dir):
    """`curl --data-binary @song.flac` calls its body a form: it is still the audio, kept whole."""
    content = (songs_dir / "song1.flac").read_bytes()
    job = added(client, content, content_type="application/x-www-form-urlencoded")
    assert job["status"] == "done", job
    played = client.get(f"/tracks/{job['track']['id']}/audio")
    assert played.data == content and [p.read_bytes() for p in _kept(data)] == [content]


def test_an_upload_is_never_served_as_a_page(client, data, songs_dir):
    """Whatever the file is called, it is kept under an audio suffix or none, and served as
    audio (or bytes) that a browser must not sniff into a page."""
    content = (songs_dir / "song0.flac").read_bytes()
    job = _upload(client, content, "x.html")
    played = client.get(f"/tracks/{job['track']['id']}/audio")
    assert played.headers["Content-Type"] == "application/octet-stream"
    assert played.headers["X-Content-Type-Options"] == "nosniff"
    assert [p.suffix for p in _kept(data)] == [""]


def test_an_older_ear_rolled_back_to_can_still_add_tracks(client, data, songs_dir):
    """The new columns have SQL defaults: an insert that does not name them works."""
    _upload(client, (songs_dir / "song0.flac").read_bytes(), "song0.flac")
    with sqlite3.connect(data / "ear.sqlite3") as db:
        db.execute("insert into track (id, title, artist, album, genre, duration, source, content_hash,"
                   " added_at) values (99, 't', '', '', '', 1.0, 's', 'h', '2026-01-01')")
        assert db.execute("select original, linked_path, library from track where id = 99"
                          ).fetchone() == ("", "", "owner")


def test_a_track_whose_original_went_meanwhile_is_refused(catalog, songs_dir, tmp_path):
    """Its original deleted between keeping and storing, and the file it was copied from now
    other bytes: storing it would make a track without audio. The other bytes are not kept,
    and another ingest's original of them is not touched."""
    copy = tmp_path / "song4.flac"
    copy.write_bytes((songs_dir / "song4.flac").read_bytes())
    prepared = catalog.prepare_file(copy, {}, shipped_model())
    other = catalog.prepare_file(songs_dir / "song5.flac", {}, shipped_model())  # not yet stored
    catalog.originals.delete(prepared.original)
    copy.write_bytes((songs_dir / "song5.flac").read_bytes())
    with pytest.raises(EarError) as caught:
        catalog.store([prepared])
    assert caught.value.code == "original_gone" and caught.value.status == 409
    assert catalog.tracks() == []
    assert [p.name for p in catalog.originals.folder.glob("??/*")] == [other.original]


def test_another_librarys_removal_of_the_same_bytes_does_not_lose_an_ingest(catalog, songs_dir):
    """`ear ingest` keeps a file, and before its batch is stored another library removes its
    track of the very same bytes, whose original was that file: the original is kept again,
    for a new track and for a track of these bytes that had no audio to play."""
    song, older = songs_dir / "song4.flac", songs_dir / "song5.flac"
    [(without_audio, _)] = catalog.store([prepare(older, catalog.config, shipped_model())])
    for path in (song, older):
        [(theirs, _)] = catalog.store([catalog.prepare_file(path, {}, shipped_model(), "zoe")], "zoe")
        prepared = catalog.prepare_file(path, {}, shipped_model())
        assert prepared.original == theirs.original
        catalog.remove(theirs.id)
        assert not catalog.originals.path(prepared.original).is_file()
        [(mine, created)] = catalog.store([prepared])
        assert created == (path == song) and (path == song or mine.id == without_audio.id)
        assert catalog.audio_path(mine) == catalog.originals.path(prepared.original)
        assert catalog.audio_path(mine).read_bytes() == path.read_bytes()
