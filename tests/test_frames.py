"""Video tracks: a picture every EAR_FRAME_SECONDS kept at ingest (frames.py), the frame of the
matched moment in answers (`frame_url`, GET /tracks/<id>/frame, `ear identify --frames`), and
frames gone with their track. The videos are FFmpeg's moving test pattern over a synthetic song."""
from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import AUTH, added, room_clip, run_ear
from synth import song, video

from ear.frames import LEFTOVER_AGE_S
from ear.ingest import prepare
from ear.models import shipped_model

SECONDS = 60
MP4 = ["-c:v", "mpeg4", "-q:v", "8", "-c:a", "aac"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    video(folder / "pattern.mp4", song(11, seconds=SECONDS), MP4)
    video(folder / "pattern.webm", song(12, seconds=SECONDS), ["-c:v", "libvpx", "-deadline", "realtime",
                                                               "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus"])
    return folder


def gray(image: bytes | Path, width: int = 320) -> np.ndarray:
    """An image (JPEG bytes, or a video's frame at `-ss` already applied) as gray pixels."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-vf", f"scale={width}:-2",
                          "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
                         input=image, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).astype(np.float32)


def video_frame(video: Path, seconds: float) -> np.ndarray:
    jpeg = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{seconds}", "-i", str(video),
                           "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "pipe:1"],
                          capture_output=True, check=True).stdout
    return gray(jpeg)


def sound_clip(videos: Path, name: str, start_s: float, tmp_path: Path) -> bytes:
    """Seconds of the video's sound as a phone in a room would send them (Opus/WebM)."""
    sound = song(11 if name.endswith(".mp4") else 12, seconds=SECONDS)
    samples = room_clip(sound, start_s, 8.0, "SOFT", tmp_path)
    out = io.BytesIO()
    sf.write(out, samples, 16000, format="WAV")
    return out.getvalue()


def test_a_clip_of_the_sound_at_40_s_answers_the_frame_at_40_s(client, videos, tmp_path):
    job = added(client, {"audio": (io.BytesIO((videos / "pattern.mp4").read_bytes()), "pattern.mp4")})
    assert job["status"] == "done", job
    answer = client.post("/identify", data={"audio": (io.BytesIO(
        sound_clip(videos, "pattern.mp4", 40.0, tmp_path)), "clip.wav")}).get_json()
    best = answer["matches"][0]
    assert best["track"]["id"] == job["track"]["id"] and abs(best["offset_s"] - 40.0) < 0.5
    frame = client.get(best["frame_url"])
    assert frame.status_code == 200 and frame.mimetype == "image/jpeg"
    pixels = gray(frame.data)
    # The pixels of the moment, and not of two seconds either side (the pattern moves; its clock
    # is drawn in the picture).
    errors = {t: float(np.mean(np.abs(pixels - video_frame(videos / "pattern.mp4", t)))) for t in (38, 40, 42)}
    assert errors[40] < 8 and errors[40] * 3 < min(errors[38], errors[42]), errors


def test_a_webm_upload_keeps_its_frames_served_with_an_etag_and_removed_with_its_track(client, videos, config):
    job = added(client, {"audio": (io.BytesIO((videos / "pattern.webm").read_bytes()), "pattern.webm")})
    track_id = job["track"]["id"]
    folder = config.frames_dir / str(track_id)
    count = len(list(folder.glob("*.jpg")))
    assert SECONDS // 2 <= count <= SECONDS // 2 + 1  # one at 60 s too if the video reaches it
    first = client.get(f"/tracks/{track_id}/frame?t=13.2")
    assert first.status_code == 200 and first.headers["ETag"]
    assert client.get(f"/tracks/{track_id}/frame?t=13.2",
                      headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    # t beyond either end: the first or the last frame
    assert client.get(f"/tracks/{track_id}/frame?t=-5").data == (folder / "000000.jpg").read_bytes()
    assert client.get(f"/tracks/{track_id}/frame?t=9999").data == (folder / f"{count - 1:06d}.jpg").read_bytes()
    assert client.get(f"/tracks/{track_id}/frame?t=soon").get_json()["error"]["code"] == "bad_time"
    assert client.get(f"/tracks/{track_id}/frame?t=nan").status_code == 400
    assert client.delete(f"/tracks/{track_id}", headers=AUTH).status_code == 200
    assert not folder.exists()
    assert client.get(f"/tracks/{track_id}/frame?t=1").status_code == 404


def test_an_audio_track_has_no_frames_and_its_answer_no_frame_url(client, songs_dir, tmp_path):
    # An .mp4 with sound only: a container that may hold video, and holds none.
    audio_only = tmp_path / "sound.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(songs_dir / "song0.flac"), "-c:a", "aac",
                    str(audio_only)], check=True)
    job = added(client, {"audio": (io.BytesIO(audio_only.read_bytes()), "sound.mp4")})
    assert job["status"] == "done", job
    track_id = job["track"]["id"]
    found = client.get(f"/tracks/{track_id}/frame?t=3")
    assert found.status_code == 404 and found.get_json()["error"]["code"] == "frame_not_found"
    answer = client.post("/identify", data={"audio": (io.BytesIO(
        (songs_dir / "song0.flac").read_bytes()), "song0.flac")}).get_json()
    assert answer["matches"][0]["track"]["id"] == track_id and "frame_url" not in answer["matches"][0]


def test_ear_identify_writes_the_frame_and_why_and_a_duplicate_leaves_no_frames(videos, tmp_path):
    data = tmp_path / "data"
    run_ear(data, "ingest", str(videos / "pattern.mp4"))
    # Another file of the same sound (its picture coarser): the track it is already.
    other = tmp_path / "coarser.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(videos / "pattern.mp4"), "-c:a", "copy",
                    "-c:v", "mpeg4", "-q:v", "20", str(other)], check=True)
    assert run_ear(data, "ingest", str(other)).stdout.startswith("exists"), "not the same track?"
    assert [p.name.isdigit() for p in (data / "frames").iterdir()] == [True]
    query = tmp_path / "q.wav"
    query.write_bytes(sound_clip(videos, "pattern.mp4", 20.0, tmp_path))
    out = run_ear(data, "identify", str(query), "--frames", str(tmp_path / "frames"),
                  "--explain", str(tmp_path / "why"))
    written = tmp_path / "frames" / "q.jpg"
    assert str(written) in out.stdout and str(tmp_path / "why" / "q.svg") in out.stdout
    assert (tmp_path / "why" / "q.svg").read_text().startswith("<svg")
    errors = {t: float(np.mean(np.abs(gray(written.read_bytes()) - video_frame(videos / "pattern.mp4", t))))
              for t in (18, 20, 22)}
    assert errors[20] * 3 < min(errors[18], errors[22]), errors


def test_frames_no_track_owns_are_swept_after_a_day(catalog, videos):
    catalog.store([prepare(videos / "pattern.mp4", catalog.config, shipped_model())])
    [owned] = list(catalog.frames.folder.iterdir())  # the stored video's
    stray = catalog.frames.folder / "1234"  # a removed track's, whose removal a crash cut short
    fresh = catalog.frames.folder / "incoming-x"  # an ingest's, still running
    for folder in (stray, fresh):
        folder.mkdir()
        (folder / "000000.jpg").write_bytes(b"\xff\xd8")
    old = time.time() - LEFTOVER_AGE_S - 60
    for folder in (stray, owned):
        os.utime(folder, (old, old))
    catalog.tidy()
    assert not stray.exists() and fresh.exists() and owned.exists()


def test_ear_reindex_frames_gives_an_older_video_track_its_pictures(videos, tmp_path):
    data = tmp_path / "data"
    run_ear(data, "ingest", str(videos / "pattern.mp4"), env={"EAR_FRAME_SECONDS": "0"})  # kept none
    assert not list((data / "frames").glob("[0-9]*"))
    out = run_ear(data, "reindex", "--frames").stdout
    assert "kept the frames of 1 video tracks" in out
    [folder] = list((data / "frames").glob("[0-9]*"))
    assert len(list(folder.glob("*.jpg"))) >= SECONDS // 2
    assert "kept the frames of 0 video tracks" in run_ear(data, "reindex", "--frames").stdout  # once

