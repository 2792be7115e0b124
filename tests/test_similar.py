"""Similar tracks, radio and fused identification, through the library, the CLI and the routes."""
from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from helpers import added, at_16k, run_ear
from synth import encode, song, write

from ear.decode import decode
from ear.models import shipped_model
from ear.errors import NotFound
from ear.identify import identify
from ear.similar import Filters, radio, similar_to_clip, similar_to_track

LABELS = {0: ("Ann", "ambient"), 1: ("Ann", "ambient"), 2: ("Ann", "rock"),
          3: ("Bob", "rock"), 4: ("Bob", "ambient"), 5: ("Cy", "rock")}


@pytest.fixture
def labelled_catalog(catalog, songs_dir):
    catalog.store([catalog.prepare_file(songs_dir / f"song{i}.flac", {"artist": a, "genre": g},
                                        shipped_model(), link=True)
                   for i, (a, g) in LABELS.items()])
    catalog.rebuild_index()
    return catalog


def _id(catalog, title):
    return next(t.id for t in catalog.tracks() if t.title == title)


def test_similar_to_a_track_never_returns_it_and_applies_filters(labelled_catalog):
    c = labelled_catalog
    song0 = _id(c, "song0")
    everything = similar_to_track(c.library(), song0, 10)
    assert len(everything) == 5 and song0 not in [s.track.id for s in everything]
    assert all(-1.0 <= s.score <= 1.0 for s in everything)
    assert [s.score for s in everything] == sorted((s.score for s in everything), reverse=True)
    mine = c.library().index.track_vector(song0)
    for s in everything:  # each score belongs to its own track (song0 itself was skipped)
        assert s.score == pytest.approx(float(mine @ c.library().index.track_vector(s.track.id)), abs=1e-3)
    assert {s.track.artist for s in similar_to_track(c.library(), song0, 10, Filters(artist="Bob"))} == {"Bob"}
    assert {s.track.genre for s in similar_to_track(c.library(), song0, 10, Filters(genre="rock"))} == {"rock"}
    assert "Ann" not in {s.track.artist for s in similar_to_track(c.library(), song0, 10, Filters(exclude_artist="Ann"))}
    assert len(similar_to_track(c.library(), song0, 2)) == 2
    with pytest.raises(NotFound):
        similar_to_track(c.library(), 9999, 5)


def test_an_identified_clip_gets_tracks_like_its_track(labelled_catalog, tmp_path):
    c = labelled_catalog
    identified, found = similar_to_clip(c.library(), at_16k(song(3), 5, 8), 3)
    assert identified is not None and identified.track.title == "song3"
    assert len(found) == 3 and "song3" not in [s.track.title for s in found]
    # Something surely not in the catalog (the synthesized songs all share one synthesizer, so
    # an unknown one can pass for a known one): speech.
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "This is not a song from the catalog, just "
                    "somebody talking near the microphone for a few seconds."], check=True)
    speech = decode(wav, max_seconds=30, timeout_s=30)
    identified, found = similar_to_clip(c.library(), speech, 3)
    assert identified is None and len(found) == 3  # discovery from the clip itself


def test_radio_is_by_other_artists_and_varies(labelled_catalog):
    c = labelled_catalog
    lists = [tuple(s.track.id for s in radio(c.library(), "Ann", 2, np.random.default_rng(seed)))
             for seed in range(12)]
    assert all(len(ids) == 2 for ids in lists)
    artists = {c.get(i).artist for ids in lists for i in ids}
    assert artists and "Ann" not in artists
    assert len(set(lists)) > 1  # not the same tracks every time
    with pytest.raises(NotFound):
        radio(c.library(), "Nobody", 2, np.random.default_rng(0))


def test_removed_track_leaves_similar_results(labelled_catalog):
    c = labelled_catalog
    song0, song4 = _id(c, "song0"), _id(c, "song4")
    c.remove(song4)
    assert song4 not in [s.track.id for s in similar_to_track(c.library(), song0, 10)]
    c.rebuild_index()
    assert song4 not in [s.track.id for s in similar_to_track(c.library(), song0, 10)]
    assert len(similar_to_track(c.library(), song0, 10)) == 4


def test_identify_says_which_evidence_matched(labelled_catalog):
    c = labelled_catalog
    best = identify(c.library(), at_16k(song(1), 3, 10)).matches[0]
    assert best.track.title == "song1"
    assert "fingerprint" in best.evidence and set(best.evidence) <= {"fingerprint", "embedding"}
    assert best.to_json()["evidence"] == list(best.evidence)


def test_cli_similar_json(labelled_catalog, tmp_path):
    data = labelled_catalog.config.data_dir  # `ear ingest` itself: test_cli
    query = write(tmp_path / "q.wav", song(2)[44100 * 6: 44100 * 14])
    out = run_ear(data, "similar", "--json", "-k", "3", str(query)).stdout.splitlines()
    answer = json.loads(out[0])
    assert answer["query"] == str(query) and answer["identified"]["track"]["title"] == "song2"
    assert len(answer["matches"]) == 3
    assert all(set(m) == {"track", "score"} and m["track"]["title"] != "song2" for m in answer["matches"])
    assert {"id", "title", "artist", "source"} <= set(answer["matches"][0]["track"])
    track2 = answer["identified"]["track"]["id"]
    by_track = json.loads(run_ear(data, "similar", "--json", "--track", str(track2),
                              "--exclude-artist", "Ann").stdout)
    assert by_track["query"] == f"track:{track2}"
    assert by_track["matches"] and all(m["track"]["artist"] != "Ann" for m in by_track["matches"])
    reindexed = run_ear(data, "reindex", "--reembed").stdout
    assert "embedded 6 tracks again" in reindexed
    assert json.loads(run_ear(data, "similar", "--json", "--track", str(track2)).stdout)["matches"]


def test_http_similar_radio_and_their_errors(client, songs_dir, tmp_path):
    def upload(i):
        artist, genre = LABELS[i]
        with open(songs_dir / f"song{i}.flac", "rb") as fh:
            job = added(client, {"audio": fh, "artist": artist, "genre": genre})
        assert job["status"] == "done", job
        return job["track"]["id"]

    ids = [upload(i) for i in range(6)]
    query = encode(write(tmp_path / "q.wav", song(1)[44100 * 4: 44100 * 12]),
                   tmp_path / "q.webm", "-c:a", "libopus", "-b:a", "32k").read_bytes()
    body = client.post("/similar?k=2&exclude_artist=Bob", data={"audio": (io.BytesIO(query), "q.webm")}).get_json()
    assert body["basis"] == "track" and body["identified"]["track"]["title"] == "song1"
    assert len(body["matches"]) == 2
    assert all(m["track"]["artist"] != "Bob" and m["track"]["id"] != ids[1] for m in body["matches"])
    r = client.get(f"/tracks/{ids[0]}/similar?genre=rock").get_json()
    assert r["track"]["id"] == ids[0] and r["matches"]
    assert {m["track"]["id"] for m in r["matches"]} <= {ids[2], ids[3], ids[5]}
    playlist = client.get("/radio?artist=Bob&k=3").get_json()
    assert playlist["tracks"] and all(t["track"]["artist"] != "Bob" for t in playlist["tracks"])
    assert client.get("/radio?artist=Nobody").status_code == 404
    assert client.get("/radio").get_json()["error"]["code"] == "missing_artist"
    assert client.get(f"/tracks/{ids[0]}/similar?k=0").status_code == 400
    bad_seed = client.get("/radio?artist=Bob&seed=x")
    assert bad_seed.status_code == 400 and bad_seed.get_json()["error"]["code"] == "bad_parameter"
    same = [client.get("/radio?artist=Ann&k=2&seed=7").get_json() for _ in range(2)]
    assert same[0] == same[1]  # a seed repeats the playlist
    assert client.post("/identify", data=query).get_json()["matches"][0]["evidence"]
