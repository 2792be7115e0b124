"""Originals: the audio files ear keeps itself, named by the SHA-256 of their bytes.

An upload (or a file `ear ingest` copies) is written under `originals/` in the data directory
as `<2 hex>/<sha256><suffix>`, durably (fsync, rename, fsync of the folder) before anything is
answered; the same bytes twice are one file. A track or a queued job names its original; the
catalog deletes the file when none does any more, under `lock`, which keeping a file and queueing
its job also hold. Playback, covers and re-embedding open only these, or
the files the owner's shell linked (`ear ingest --link`): never a path that came over HTTP.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable

from .storage import commit, ensure_writable, locked, sync_folder

AUDIO_SUFFIXES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
                  ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4",
                  ".mp4": "audio/mp4", ".aac": "audio/aac", ".webm": "audio/webm",
                  ".mka": "audio/x-matroska", ".wma": "audio/x-ms-wma", ".aif": "audio/aiff",
                  ".aiff": "audio/aiff", ".xm": "audio/xm", ".mod": "audio/mod", ".it": "audio/it",
                  ".s3m": "audio/s3m", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
                  ".m4v": "video/mp4"}  # what ear takes for audio (a video's sound), and the type it is served as

_COPY_BYTES = 1 << 20  # copied a MB at a time: an upload is never held whole in memory
_NAME = re.compile(r"[0-9a-f]{64}(\.[a-z0-9]{1,5})?")  # what `keep` names a file
# Leftovers (a half-written upload, an original whose track was never stored) are deleted only
# when older than this: a long `ear ingest` keeps originals for a batch before it stores them.
LEFTOVER_AGE_S = 24 * 3600.0


def audio_type(suffix: str) -> str:
    """The type a file with this suffix is served as (by the suffixes `keep` lets through)."""
    return AUDIO_SUFFIXES.get(suffix.lower(), "application/octet-stream")


class Originals:
    """The folder of originals: keep, find, delete, sweep."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ensure_writable(folder)

    def keep(self, stream: BinaryIO, suffix: str = "", only_as: str = "") -> str:
        """Copy `stream` to its place and return its name (`<sha256><suffix>`). Whatever the
        stream raises (an upload over the size limit, a client gone) leaves nothing behind;
        with `only_as`, neither do bytes of another name ("" is returned)."""
        # The suffix is kept for the type a browser is sent (FFmpeg reads the content whatever
        # the name): an audio one only, so that no upload is ever served as a page.
        suffix = suffix.lower() if suffix.lower() in AUDIO_SUFFIXES else ""
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix="incoming-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, 0o644)  # readable by the service whoever ran `ear ingest`
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(_COPY_BYTES):
                    digest.update(block)
                    out.write(block)
            name = digest.hexdigest() + suffix
            if only_as and name != only_as:
                tmp.unlink()
                return ""
            final = self.path(name)
            if not final.parent.is_dir():
                final.parent.mkdir(mode=0o755, exist_ok=True)  # another upload may make it too
                sync_folder(self.folder)
            # Over a file with the same bytes too: the same content, newly dated, so that no
            # sweep takes it before its track is stored.
            commit(tmp, final)
            return name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def lock(self):
        """Held while a file is kept and named, or found unnamed and deleted (across processes)."""
        return locked(self.folder.with_name(self.folder.name + ".lock"))  # beside: not an original

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not an original's name: {name!r}")
        return self.folder / name[:2] / name

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def sweep(self, named: Iterable[str]) -> int:
        """Delete leftovers older than LEFTOVER_AGE_S: half-written files, and originals that
        no track in `named` names. Returns how many went."""
        keep = set(named)
        cutoff = time.time() - LEFTOVER_AGE_S
        gone = 0
        for path in [*self.folder.glob("incoming-*.tmp"), *self.folder.glob("??/*")]:
            if path.name in keep:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone += 1
            except FileNotFoundError:
                pass
        return gone
