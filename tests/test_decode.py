"""decode(): every format a browser or a curl user sends, and every bad input, by its error."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from synth import RATE, encode, song, write

from ear.db import METADATA_FIELDS
from ear.decode import SAMPLE_RATE, decode, read_tags
from ear.errors import BadAudio


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    return write(folder / "song.wav", song(42, seconds=6))


@pytest.mark.parametrize("suffix,args", [
    (".webm", ["-c:a", "libopus", "-b:a", "32k"]),  # Chrome/Firefox MediaRecorder
    (".mp4", ["-c:a", "aac", "-b:a", "96k"]),  # Safari MediaRecorder
    (".mp3", ["-c:a", "libmp3lame"]),
    (".ogg", ["-c:a", "libvorbis"]),
    (".flac", []),
    (".wav", []),
])
def test_every_format_decodes_to_16k_mono(wav, tmp_path, suffix, args):
    path = encode(wav, tmp_path / f"clip{suffix}", *args)
    for source in (path, path.read_bytes()):  # a CLI path and an HTTP upload
        samples = decode(source, max_seconds=30, timeout_s=30)
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert abs(samples.size / SAMPLE_RATE - 6.0) < 0.1


def test_downmix_has_no_3db_gain(tmp_path):
    mono = song(1, seconds=3, channels=1)
    a = decode(write(tmp_path / "mono.wav", mono), max_seconds=30, timeout_s=30)
    b = decode(write(tmp_path / "stereo.wav", np.repeat(mono, 2, axis=1)), max_seconds=30, timeout_s=30)
    assert np.sqrt(np.mean(b ** 2)) / np.sqrt(np.mean(a ** 2)) == pytest.approx(1.0, abs=0.01)


def _code(source, **kwargs) -> BadAudio:
    with pytest.raises(BadAudio) as info:
        decode(source, **{"max_seconds": 30, "timeout_s": 30, **kwargs})
    return info.value


def test_empty_upload():
    assert _code(b"").code == "empty"


def test_text_is_not_audio():
    err = _code(b"hello, this is certainly not audio\n" * 50)
    assert err.code == "not_audio" and err.status == 415


def test_truncated_mp4(wav, tmp_path):
    data = encode(wav, tmp_path / "a.mp4", "-c:a", "aac").read_bytes()
    assert _code(data[: len(data) // 3]).code == "truncated"


def test_silence(tmp_path):
    path = write(tmp_path / "silent.wav", np.zeros((RATE * 3, 2), np.float32))
    err = _code(path)
    assert err.code == "silent" and err.status == 422


def test_too_long_query_stops_early(tmp_path):
    path = write(tmp_path / "long.wav", song(3, seconds=12))
    err = _code(path, max_seconds=10)
    assert err.code == "too_long" and err.status == 413


def test_too_short(tmp_path):
    path = write(tmp_path / "blip.wav", song(3, seconds=0.3))
    assert _code(path).code == "too_short"


def test_timeout(wav):
    assert _code(wav, timeout_s=0.001).code == "decode_timeout"


def test_hls_playlist_cannot_read_other_files(wav, tmp_path):
    playlist = (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:6.0,\n{wav}\n"
                "#EXT-X-ENDLIST\n").encode()
    (tmp_path / "list.m3u8").write_bytes(playlist)
    for source in (playlist, tmp_path / "list.m3u8"):
        assert _code(source).code == "not_audio"


def test_concat_playlist_cannot_read_other_files(wav, tmp_path):
    playlist = f"ffconcat version 1.0\nfile '{wav}'\n".encode()
    assert _code(playlist).code == "not_audio"


def test_missing_file(tmp_path):
    assert _code(tmp_path / "nope.wav").code == "unreadable"


def test_tags_are_read(wav, tmp_path):
    path = encode(wav, tmp_path / "tagged.ogg", "-c:a", "libvorbis", "-metadata", "title=Night Drive",
                  "-metadata", "artist=The Testers", "-metadata", "genre=Synthwave")
    assert read_tags(path, METADATA_FIELDS) == {"title": "Night Drive", "artist": "The Testers",
                                                "genre": "Synthwave"}
    assert read_tags(b"not audio", METADATA_FIELDS) == {}


def test_video_without_sound(tmp_path):
    video = tmp_path / "silent-film.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=64x64",
                    "-c:v", "mjpeg", str(video)], check=True)
    err = _code(video.read_bytes())
    assert err.code == "no_audio_stream" and err.status == 415
