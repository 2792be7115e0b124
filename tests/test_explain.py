"""Why it matched (explain.py): POST /identify?explain=1 lays open the best match's evidence, and
its picture is a small SVG that stands alone."""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import soundfile as sf
from helpers import AUTH, added, room_clip, run_ear
from synth import RATE, beat, hummed, song, tune, write

from ear.explain import Explanation, picture
from ear.features import FRAME_SECONDS

SVG = "{http://www.w3.org/2000/svg}"


def wav(samples: np.ndarray) -> io.BytesIO:
    out = io.BytesIO()
    sf.write(out, samples, 16000, format="WAV")
    out.seek(0)
    return out


def flac(sound: np.ndarray) -> io.BytesIO:
    out = io.BytesIO()
    sf.write(out, sound, RATE, format="FLAC")
    out.seek(0)
    return out


def test_the_evidence_lies_on_the_answered_offset_and_stands_above_chance(client, tmp_path):
    sound = song(21, seconds=40.0)
    job = added(client, {"audio": (flac(sound), "x.flac"), "title": "<b>Bold</b> & co"})
    assert job["status"] == "done", job
    answer = client.post("/identify?explain=1", data={
        "audio": (wav(room_clip(sound, 17.0, 8.0, "HARD", tmp_path)), "clip.wav")}).get_json()
    best, why = answer["matches"][0], answer["explain"]
    assert why["track_id"] == best["track"]["id"] and abs(why["offset_s"] - best["offset_s"]) < 0.05
    assert abs(why["offset_s"] - 17.0) < 0.1
    assert why["z"] >= why["threshold"] and "fingerprint" in why["evidence"]
    pairs = np.array(why["pairs"])
    assert len(pairs) >= 20  # the peaks that landed: every one on the diagonal of the offset
    assert np.all(np.abs(pairs[:, 1] - pairs[:, 0] - why["offset_s"]) <= FRAME_SECONDS * 1.01)
    votes = np.array(why["votes_per_second"])
    assert len(votes) in (40, 41) and int(np.argmax(votes)) in (16, 17)
    assert votes.max() > why["chance_votes"], (votes, why["chance_votes"])
    svg = why["svg"]
    assert len(svg.encode()) <= 30_000
    root = ET.fromstring(svg)  # well-formed: the title's markup escaped, not interpreted
    assert root.tag == SVG + "svg" and "<b>Bold</b> & co" in root.find(SVG + "title").text


def test_no_explain_unless_asked_and_none_without_a_match(client, tmp_path):
    sound = song(22, seconds=30.0)
    added(client, {"audio": (flac(sound), "y.flac")}, headers=AUTH)
    plain = client.post("/identify", data={"audio": (wav(room_clip(sound, 5, 6, "CLEAN", tmp_path)), "c.wav")})
    assert plain.get_json()["matches"] and "explain" not in plain.get_json()
    unknown = client.post("/identify?explain=1", data={
        "audio": (wav(room_clip(song(23, seconds=20.0), 5, 6, "CLEAN", tmp_path)), "u.wav")}).get_json()
    assert unknown["matches"] == [] and "explain" not in unknown


def test_the_picture_of_a_three_hour_track_stays_under_30_kb():
    rng = np.random.default_rng(0)
    seconds = 3 * 3600
    hits = np.stack([rng.uniform(0, 10, 250_000), rng.uniform(0, seconds, 250_000)], axis=1)
    pairs = np.stack([np.linspace(0, 10, 2000), np.linspace(0, 10, 2000) + 5000, np.full(2000, 440.0)], axis=1)
    votes = rng.poisson(3, seconds)
    votes[5000] = 400
    e = Explanation(7, "long", 5000.0, 10.0, 30.0, 7.5, ("fingerprint",), pairs, hits, votes, 9.0)
    svg = picture(e)
    assert len(svg.encode()) <= 30_000, len(svg)
    ET.fromstring(svg)


def test_a_hum_is_laid_over_the_melody_it_matched(client, config, tmp_path):
    for seed in (0, 1):
        added(client, {"audio": (io.BytesIO(write(tmp_path / f"beat{seed}.flac", beat(tune(seed), 90.0 + 8 * seed, seed))
                                            .read_bytes()), f"beat{seed}.flac")})
    hum = write(tmp_path / "hum.wav", hummed(tune(0), 10, 14, 90.0 * 0.8, -4, 0))  # a major third down
    body = client.post("/hum?explain=1", data={"audio": (io.BytesIO(hum.read_bytes()), "hum.wav")}).get_json()
    why = body["explain"]
    assert why["track_id"] == body["matches"][0]["track"]["id"] and why["start_s"] == body["matches"][0]["start_s"]
    assert round(why["shift"]) % 12 == 4
    hummed_, melody = np.array(why["hum"]), np.array(why["melody"])
    # Each hum point lies on the melody sounding at its time in the track (the hum is stretched
    # linearly onto the span, so a note's edges may miss: most points, not all).
    nearest = melody[np.abs(melody[:, 0][None, :] - hummed_[:, 0][:, None]).argmin(axis=1), 1]
    assert np.median(np.abs(hummed_[:, 1] - nearest)) < 1.0
    assert len(why["svg"].encode()) <= 30_000 and ET.fromstring(why["svg"]).tag == SVG + "svg"
    out = run_ear(config.data_dir, "hum", str(hum), "--explain", str(tmp_path / "why")).stdout
    assert str(tmp_path / "why" / "hum.svg") in out and (tmp_path / "why" / "hum.svg").read_text().startswith("<svg")
