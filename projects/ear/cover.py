"""A track's cover image: the picture attached to its file (ID3 APIC, FLAC/Vorbis picture, MP4
cover), found by ffprobe once per file version and copied out by FFmpeg without re-encoding.
The files are a track's original kept by ear or the file its owner linked (catalog.audio_path),
read by path with only the `file` protocol allowed.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

IMAGE_TYPES = {"mjpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
_TIMEOUT_S = 10


def cover_type(path: Path) -> str | None:
    """The MIME type of the file's cover image, or None when it has none (or is gone)."""
    if not path.is_file():
        return None
    return IMAGE_TYPES.get(_attached_picture_codec(_input(path), path.stat().st_mtime_ns))


def cover_image(path: Path) -> bytes:
    """The cover image's bytes as stored in the file (b"" if it cannot be read)."""
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-i", _input(path),
         "-map", "0:v:0", "-frames:v", "1", "-c:v", "copy", "-f", "image2pipe", "pipe:1"],
        capture_output=True, timeout=_TIMEOUT_S).stdout


def _input(path: Path) -> str:
    # Absolute and with its protocol named: a name like "a:b.mp3" is no protocol.
    return "file:" + str(path.resolve())


@functools.lru_cache(maxsize=4096)
def _attached_picture_codec(path: str, mtime_ns: int) -> str:
    """The codec of the file's attached picture, or "" (asked once per file version)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-select_streams", "v",
         "-show_entries", "stream=codec_name:stream_disposition=attached_pic", "-of", "csv=p=0", path],
        capture_output=True, text=True, timeout=_TIMEOUT_S).stdout
    for line in out.splitlines():
        codec, _, attached = line.partition(",")
        if attached.strip() == "1":
            return codec.strip()
    return ""
