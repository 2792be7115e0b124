"""A video track's pictures: one small JPEG every EAR_FRAME_SECONDS, kept beside the catalog so
that an answer can show the frame of the matched moment.

`extract` runs FFmpeg once over a track's file at ingest (only files whose suffix says they may
hold video: an audio file costs nothing), into a folder of its own under `frames/` named
`incoming-*`; `Frames.adopt` renames that folder to the track's id when the track is stored.
Frame n shows the video at n × `every_s` seconds (FFmpeg's fps filter takes the nearest
frame). A track id is never handed out twice (ids.py), so a folder's name says whose it is;
folders of tracks that were removed, or never stored (a crash, a duplicate), are swept.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .storage import ensure_writable, sync_folder, write_json

log = logging.getLogger(__name__)

# Containers that carry video as well as sound; an .m4a's only picture is its cover.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm"}
WIDTH = 320  # pixels: a phone-sized picture, ~10 KB as JPEG at QUALITY
QUALITY = 6  # FFmpeg's JPEG scale, 2 (best) to 31: 6 keeps text in a frame readable
_INFO = "frames.json"
_MOV_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"}
_INCOMING = "incoming-"
# A folder no track names is deleted only when older than this: a long `ear ingest` stores its
# batch after analysing it, and the worker's store may be running in another process.
LEFTOVER_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class Extracted:
    """Frames taken from a file, waiting in their folder for the track's id."""

    folder: Path
    count: int


def extract(path: Path, config: Config, seconds: float) -> Extracted | None:
    """A JPEG every EAR_FRAME_SECONDS of the file's video (`seconds` long), in a new folder under
    the data folder's `frames/`; None when the file holds no video (a cover image is no video),
    or FFmpeg cannot read it within a second of decoding per second of video: the sound is what
    makes a track, its pictures are a courtesy."""
    into, every_s = config.frames_dir, config.frame_seconds
    timeout_s = max(config.decode_timeout_s, seconds)
    demuxer = _demuxer(path) if every_s > 0 and path.suffix.lower() in VIDEO_SUFFIXES else None
    if demuxer is None:
        return None
    into.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=_INCOMING, dir=into))
    # `V` (capital): video that is not an attached picture. One thread: the site shares the core.
    # Decoding the video is nearly all of the cost: frames no other frame refers to are skipped,
    # and the deblocking filter, which a 320 px picture does not show (half the CPU; the picture
    # at t is then at most a frame earlier; docs/seeing.md).
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-skip_frame", "noref",
           "-skip_loop_filter", "all", "-protocol_whitelist", "file",
           "-f", demuxer, "-i", "file:" + str(path.resolve()), "-map", "0:V:0", "-an", "-sn", "-dn",
           "-vf", f"fps=1/{every_s:g}:round=up,scale={WIDTH}:-2", "-q:v", str(QUALITY),
           "-start_number", "0", "-f", "image2", str(folder / "%06d.jpg")]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        done = False
    count = len(list(folder.glob("*.jpg")))
    if not done or count == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    write_json(folder / _INFO, {"every_s": every_s, "count": count})
    return Extracted(folder, count)


class Frames:
    """The folder of every track's frames: `frames/<track id>/NNNNNN.jpg`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ensure_writable(folder)

    def adopt(self, extracted: Extracted, track_id: int) -> None:
        """Make extracted frames the track's (before its row is committed: a track that can be
        found has its frames; frames whose row never came are swept). Frames already adopted,
        or swept meanwhile, leave the track without pictures."""
        owner = self.folder.stat()
        try:
            for path in [extracted.folder, *extracted.folder.iterdir()]:
                path.chmod(0o755 if path.is_dir() else 0o644)
                if os.geteuid() == 0:  # the owner's `ear ingest` as root: the service removes them
                    os.chown(path, owner.st_uid, owner.st_gid)
            os.replace(extracted.folder, self.folder / str(track_id))
        except FileNotFoundError:
            log.warning("the frames of track %d were gone before it was stored", track_id)
            return
        sync_folder(self.folder)

    def give(self, extracted: Extracted | None, track_id: int | None) -> None:
        """Frames of a track that was there already: its own if it has none (a video added
        before frames were kept, sent again), else not wanted."""
        if extracted is None:
            return
        if track_id is not None and not self.has(track_id):
            self.adopt(extracted, track_id)
        else:
            shutil.rmtree(extracted.folder, ignore_errors=True)

    def remove(self, track_id: int) -> None:
        _remove(self.folder / str(track_id))

    def nearest(self, track_id: int, seconds: float) -> Path | None:
        """The track's frame nearest `seconds` into it; None when it has no frames."""
        info = _info(self.folder / str(track_id))
        if info is None:
            return None
        n = min(max(round(seconds / info["every_s"]), 0), info["count"] - 1)
        return self.folder / str(track_id) / f"{n:06d}.jpg"

    def has(self, track_id: int) -> bool:
        return (self.folder / str(track_id) / _INFO).is_file()

    def sweep(self, track_ids: set[int]) -> int:
        """Delete folders older than LEFTOVER_AGE_S that no track in `track_ids` owns: frames of
        removed tracks, of stores a crash cut short, of duplicates. Returns how many went."""
        cutoff = time.time() - LEFTOVER_AGE_S
        gone = 0
        for folder in self.folder.iterdir():
            if folder.name.isdigit() and int(folder.name) in track_ids:
                continue
            try:
                old = folder.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            gone += old and _remove(folder)
        return gone


def _remove(folder: Path) -> bool:
    """Delete a folder of frames; one that cannot be (another user's) is logged, not raised:
    pictures must never stop a removal or the service's start."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.error("cannot delete %s: %s", folder, exc)
        return False
    return True


def _demuxer(path: Path) -> str | None:
    """The FFmpeg demuxer for the file's content, named so that no other demuxer is tried: one
    that reads playlists (HLS, concat) would open other files. None: not a video container."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return None
    if head[4:8] in _MOV_ATOMS:
        return "mov"  # MP4, M4V, and QuickTime files that start with another atom than ftyp
    return "matroska" if head[:4] == b"\x1a\x45\xdf\xa3" else None  # MKV, WebM


def _info(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None
