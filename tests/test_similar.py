"""Similar tracks, radio and fused identification, through the catalog, the CLI and a real
Gunicorn."""
from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest
import requests
from conftest import start_gunicorn
from synth import encode, song, write
from test_cli import ear

from ear.decode import decode
from ear.degrade import resample
from ear.errors import NotFound

LABELS = {0: ("Ann", "ambient"), 1: ("Ann", "ambient"), 2: ("Ann", "rock"),
          3: ("Bob", "rock"), 4: ("Bob", "ambient"), 5: ("Cy", "rock")}


@pytest.fixture
def labelled_catalog(catalog, songs_dir):
    catalog.store([catalog.prepare(songs_dir / f"song{i}.flac",
                                   metadata={"artist": a, "genre": g})
                   for i, (a, g) in LABELS.items()])
    catalog.rebuild_index()
    return catalog


def _at_16k(audio: np.ndarray, start_s: float, seconds: float) -> np.ndarray:
    mono = audio[int(start_s * 44100): int((start_s + seconds) * 44100)].mean(axis=1)
    return resample(mono, 44100 / 16000)


def _id(catalog, title):
    return next(t.id for t in catalog.tracks() if t.title == title)


def test_similar_to_a_track_never_returns_it_and_applies_filters(labelled_catalog):
    c = labelled_catalog
    song0 = _id(c, "song0")
    everything = c.similar_to_track(song0, 10)
    assert len(everything) == 5 and song0 not in [s.track.id for s in everything]
    assert all(-1.0 <= s.score <= 1.0 for s in everything)
    assert [s.score for s in everything] == sorted((s.score for s in everything), reverse=True)
    mine = c.index.track_vector(song0)
    for s in everything:  # each score belongs to its own track (song0 itself was skipped)
        assert s.score == pytest.approx(float(mine @ c.index.track_vector(s.track.id)), abs=1e-3)
    assert {s.track.artist for s in c.similar_to_track(song0, 10, artist="Bob")} == {"Bob"}
    assert {s.track.genre for s in c.similar_to_track(song0, 10, genre="rock")} == {"rock"}
    assert "Ann" not in {s.track.artist for s in c.similar_to_track(song0, 10, exclude_artist="Ann")}
    assert len(c.similar_to_track(song0, 2)) == 2
    with pytest.raises(NotFound):
        c.similar_to_track(9999, 5)


def test_an_identified_clip_gets_tracks_like_its_track(labelled_catalog, tmp_path):
    c = labelled_catalog
    identified, found = c.similar_to_clip(_at_16k(song(3), 5, 8), 3)
    assert identified is not None and identified.track.title == "song3"
    assert len(found) == 3 and "song3" not in [s.track.title for s in found]
    # Something surely not in the catalog (the synthesized songs all share one synthesizer, so
    # an unknown one can pass for a known one): speech.
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "This is not a song from the catalog, just "
                    "somebody talking near the microphone for a few seconds."], check=True)
    speech = decode(wav, max_seconds=30, timeout_s=30)
    identified, found = c.similar_to_clip(speech, 3)
    assert identified is None and len(found) == 3  # discovery from the clip itself


def test_radio_is_by_other_artists_and_varies(labelled_catalog):
    c = labelled_catalog
    lists = [tuple(s.track.id for s in c.radio("Ann", 2, np.random.default_rng(seed)))
             for seed in range(12)]
    assert all(len(ids) == 2 for ids in lists)
    artists = {c.get(i).artist for ids in lists for i in ids}
    assert artists and "Ann" not in artists
    assert len(set(lists)) > 1  # not the same tracks every time
    with pytest.raises(NotFound):
        c.radio("Nobody", 2, np.random.default_rng(0))


def test_removed_track_leaves_similar_results(labelled_catalog):
    c = labelled_catalog
    song0, song4 = _id(c, "song0"), _id(c, "song4")
    c.remove(song4)
    assert song4 not in [s.track.id for s in c.similar_to_track(song0, 10)]
    c.rebuild_index()
    assert song4 not in [s.track.id for s in c.similar_to_track(song0, 10)]
    assert len(c.similar_to_track(song0, 10)) == 4


def test_identify_says_which_evidence_matched(labelled_catalog):
    c = labelled_catalog
    best = c.identify(_at_16k(song(1), 3, 10))[0]
    assert best.track.title == "song1"
    assert "fingerprint" in best.evidence and set(best.evidence) <= {"fingerprint", "embedding"}
    assert best.to_json()["evidence"] == list(best.evidence)


def test_cli_similar_json(tmp_path, songs_dir):
    data = tmp_path / "data"
    for i, (artist, genre) in LABELS.items():
        ear(data, "ingest", "--artist", artist, "--genre", genre, str(songs_dir / f"song{i}.flac"))
    query = write(tmp_path / "q.wav", song(2)[44100 * 6: 44100 * 14])
    out = ear(data, "similar", "--json", "-k", "3", str(query)).stdout.splitlines()
    answer = json.loads(out[0])
    assert answer["query"] == str(query) and answer["identified"]["track"]["title"] == "song2"
    assert len(answer["matches"]) == 3
    assert all(set(m) == {"track", "score"} and m["track"]["title"] != "song2" for m in answer["matches"])
    assert {"id", "title", "artist", "source"} <= set(answer["matches"][0]["track"])
    track2 = answer["identified"]["track"]["id"]
    by_track = json.loads(ear(data, "similar", "--json", "--track", str(track2),
                              "--exclude-artist", "Ann").stdout)
    assert by_track["query"] == f"track:{track2}"
    assert by_track["matches"] and all(m["track"]["artist"] != "Ann" for m in by_track["matches"])
    reindexed = ear(data, "reindex", "--reembed").stdout
    assert "embedded 6 tracks again" in reindexed
    assert json.loads(ear(data, "similar", "--json", "--track", str(track2)).stdout)["matches"]


def test_http_similar_radio_and_rebuilds_under_queries(tmp_path, songs_dir):
    gen = start_gunicorn(tmp_path, EAR_TORCH_THREADS="3")
    server = next(gen)
    try:
        health = requests.get(server.url + "/health", timeout=10).json()
        assert health["torch_threads"] == 3  # what the config says, inside the worker
        auth = {"Authorization": "Bearer test-token"}

        def upload(i):
            artist, genre = LABELS[i]
            with open(songs_dir / f"song{i}.flac", "rb") as fh:
                r = requests.post(server.url + "/tracks", files={"audio": fh}, headers=auth,
                                  data={"artist": artist, "genre": genre}, timeout=60)
            assert r.status_code == 201, r.text
            return r.json()["track"]["id"]

        ids = [upload(i) for i in range(3)]
        query = encode(write(tmp_path / "q.wav", song(1)[44100 * 4: 44100 * 12]),
                       tmp_path / "q.webm", "-c:a", "libopus", "-b:a", "32k")
        failures, answered, stop = [], [], threading.Event()

        def ask():
            while not stop.is_set():
                r = requests.post(server.url + "/similar", files={"audio": query.read_bytes()},
                                  timeout=60)
                (answered if r.status_code == 200 else failures).append(r.text)

        asker = threading.Thread(target=ask)
        asker.start()
        ids += [upload(i) for i in range(3, 6)]  # each add rebuilds the index in the background
        stop.set()
        asker.join()
        assert answered and not failures

        body = requests.post(server.url + "/similar?k=2&exclude_artist=Bob",
                             files={"audio": query.read_bytes()}, timeout=60).json()
        assert body["basis"] == "track" and body["identified"]["track"]["title"] == "song1"
        assert len(body["matches"]) == 2
        assert all(m["track"]["artist"] != "Bob" and m["track"]["id"] != ids[1] for m in body["matches"])
        r = requests.get(server.url + f"/tracks/{ids[0]}/similar?genre=rock", timeout=10).json()
        assert r["track"]["id"] == ids[0] and {m["track"]["id"] for m in r["matches"]} <= {ids[2], ids[3], ids[5]}
        radio = requests.get(server.url + "/radio?artist=Bob&k=3", timeout=10).json()
        assert radio["tracks"] and all(t["track"]["artist"] != "Bob" for t in radio["tracks"])
        assert requests.get(server.url + "/radio?artist=Nobody", timeout=10).status_code == 404
        assert requests.get(server.url + "/radio", timeout=10).json()["error"]["code"] == "missing_artist"
        assert requests.get(server.url + "/tracks/1/similar?k=0", timeout=10).status_code == 400
        bad_seed = requests.get(server.url + "/radio?artist=Bob&seed=x", timeout=10)
        assert bad_seed.status_code == 400 and bad_seed.json()["error"]["code"] == "bad_parameter"
        same = [requests.get(server.url + "/radio?artist=Ann&k=2&seed=7", timeout=10).json()
                for _ in range(2)]
        assert same[0] == same[1]  # a seed repeats the playlist
        identify = requests.post(server.url + "/identify", files={"audio": query.read_bytes()},
                                 timeout=60).json()
        assert identify["matches"][0]["evidence"]
    finally:
        next(gen, None)
