"""The `ear` command as a user runs it (a real subprocess, real files)."""
from __future__ import annotations

import json
import shutil
import subprocess

from helpers import run_ear as ear
from synth import encode, song, write


def test_ingest_identify_tracks_remove(tmp_path, songs_dir):
    data = tmp_path / "data"
    library = tmp_path / "library"
    shutil.copytree(songs_dir, library / "album")
    (library / "album" / "broken.mp3").write_bytes(b"this is no mp3")
    out = ear(data, "ingest", str(library))
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("added\t") for line in lines)
    assert "skipped" in out.stderr and "broken.mp3" in out.stderr

    # Ingesting again changes nothing.
    again = ear(data, "ingest", str(library / "album" / "song3.flac"))
    assert again.stdout.startswith("exists\t")

    q1 = encode(write(tmp_path / "q1.wav", song(3)[44100 * 4: 44100 * 12]), tmp_path / "q1.webm",
                "-c:a", "libopus", "-b:a", "32k")
    # Not in the catalog. (Not another synthesized song: they all share one synthesizer, and
    # fusion can take one for another; measured on real music it does not, see `ear eval`.)
    q2 = tmp_path / "q2.wav"
    subprocess.run(["espeak-ng", "-w", str(q2), "Nothing in this catalog sounds like a voice "
                    "reading this sentence aloud."], check=True)
    result = ear(data, "identify", "--json", str(q1), str(q2), str(tmp_path / "missing.wav"))
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["query"] for a in answers] == [str(q1), str(q2), str(tmp_path / "missing.wav")]
    best = answers[0]["matches"][0]
    assert best["track"]["title"] == "song3" and set(best["track"]) == {"id", "title", "artist", "source", "library"}
    assert abs(best["offset_s"] - 4.0) <= 0.1 and 0 < best["confidence"] <= 1 and best["score"] > 0
    assert answers[1]["matches"] == []
    assert answers[2]["error"]["code"] == "unreadable"

    # The ranking below the answer, on request: a match comes first and is confirmed; the
    # voice has no match, and whatever ranks for it says it is not confirmed.
    ranked = [json.loads(line) for line in ear(
        data, "identify", "--json", "--candidates", "3", str(q1), str(q2)).stdout.splitlines()]
    assert ranked[0]["candidates"][0]["track"]["title"] == "song3"
    assert "confirmed" not in ranked[0]["candidates"][0]
    assert ranked[1]["matches"] == [] and len(ranked[1]["candidates"]) <= 3
    assert all(c["confirmed"] is False for c in ranked[1]["candidates"])
    assert all(c["confirmed"] is False for c in ranked[0]["candidates"][1:])
    refused = ear(data, "identify", "--candidates", "-3", str(q1), check=False)
    assert refused.returncode == 2 and "between 0 and 100" in refused.stderr

    listing = ear(data, "tracks").stdout.splitlines()
    assert len(listing) == 6
    track_id = best["track"]["id"]
    assert ear(data, "remove", str(track_id)).stdout.startswith(f"removed\t{track_id}")
    assert ear(data, "remove", str(track_id), check=False).returncode == 1
    after = json.loads(ear(data, "identify", "--json", str(q1)).stdout)
    assert all(m["track"]["id"] != track_id for m in after["matches"])
    assert len(ear(data, "tracks").stdout.splitlines()) == 5
