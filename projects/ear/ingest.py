"""A track in: decode it once, read its tags, and compute what every chain stores of it
(landmarks and peaks, embedding vectors, the melody's pitch contour).

`prepare` is the slow part of adding a track (decode, landmarks, peaks, vectors) and holds no
lock; `Catalog.store` then writes what it prepared. Metadata given by the owner wins over the
file's tags; a track with no title is named after its file.
"""
from __future__ import annotations

import hashlib
from contextlib import closing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import soundfile as sf

from .config import Config
from .db import METADATA_FIELDS
from .decode import SAMPLE_RATE, decode_track, read_tags
from .embed import Model, Windows
from .errors import BadAudio
from .frames import Extracted, extract
from .features import FRAME_SECONDS, TRACK_PEAKS, Block, block_peaks, blocks
from .hashes import TrackLandmarks
from .originals import AUDIO_SUFFIXES
from .pitch import TRACK_LOWEST, BlockContour, contour
from .runtime import trim_heap
from .segments import encode_peaks

_VECTOR_HOP_S = 1.0  # a stored window every second: queries' windows are offset by ≤ 0.5 s
OnProgress = Callable[[float], None]  # told the seconds of audio analysed so far

# Music has spectral peaks within its first minute; a file without any (hiss, a tone below the
# floor, a long silence) is refused then, not after hours of decoding.
_PEAKS_WITHIN_S = 60.0
# A block's tens of MB of temporaries, freed between the small arrays kept of it, leave the heap
# fragmented and growing with the track's length unless it is trimmed; trimmed after every
# block, the next block's temporaries page-fault in again: 15 % more CPU. Every 5 blocks costs
# what never trimming costs, and 11 MB more at the peak of a 3-hour track (docs/speed.md).
_TRIM_EVERY_BLOCKS = 5


@dataclass(frozen=True)
class Fingerprint:
    """What the landmark chain stores of a track."""

    hashes: np.ndarray  # landmark hashes (uint32)
    frames: np.ndarray  # their anchor frames
    peaks: np.ndarray  # the spectral peaks that verify a fit, encoded for the hash table


@dataclass(frozen=True)
class Embedding:
    """What the embedding chain stores of a track."""

    vectors: np.ndarray  # one per 2 s window, a window a second (float16)
    starts: np.ndarray  # the windows' start times in s
    style: np.ndarray  # what "similar tracks" compares (embed.Model.style_vector)
    model: str  # the version (models.py) that made them: an index holds one version's vectors

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window vectors, their starts, style vector), as index.py stores a track."""
        return self.vectors, self.starts, self.style


@dataclass(frozen=True)
class PreparedTrack:
    """A decoded, analysed track not yet stored."""

    source: str
    metadata: dict[str, str]
    duration: float
    content_hash: str  # of the decoded audio: the same music in another file is the same track
    fingerprint: Fingerprint
    embedding: Embedding | None  # None: stored for identification by fingerprint only
    melody: np.ndarray | None = None  # its pitch contour (pitch.py); None: not found by humming
    original: str = ""  # the original ear keeps of it (originals.py), if any
    linked_path: str = ""  # the file the owner's shell linked instead, if any
    copied_from: str = ""  # the file the owner's shell had the original copied from, if any
    frames: Extracted | None = None  # a video's pictures (frames.py), waiting for the track's id


def prepare(source: bytes | str | os.PathLike, config: Config, model: Model,
            name: str | None = None, metadata: dict | None = None,
            progress: OnProgress | None = None) -> PreparedTrack:
    """Decode and analyse one track: a file path, or the bytes of an upload (then `name`
    says where it came from). The audio streams through a block at a time (features.blocks),
    so an hours-long track costs the memory of a minute's analysis plus what is kept of it.
    `progress` is called after each block (what it raises stops the analysis)."""
    source_name = name or str(source)
    prints, windows, melody = Fingerprinting(), Windows(model, _VECTOR_HOP_S), BlockContour(TRACK_LOWEST)
    # closing: FFmpeg is stopped as soon as the analysis stops, even while its error is held.
    with closing(decode_track(source, config)) as parts:
        audio = HashedAudio(parts)
        for count, block in enumerate(blocks(audio), 1):
            prints.add(block)
            windows.add(block)
            melody.add(block)
            if count % _TRIM_EVERY_BLOCKS == 0:
                trim_heap()
            if progress is not None:
                progress(audio.seconds)
    return PreparedTrack(source_name, track_metadata(source, source_name, metadata),
                         audio.seconds, audio.content_hash, prints.result(), _embedding(windows),
                         melody.result(), frames=_frames(source, config, audio.seconds))


def _frames(source: bytes | str | os.PathLike, config: Config, seconds: float) -> Extracted | None:
    # Video is read from files only (an upload is one by now: originals.py).
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    return extract(Path(source), config, seconds)


class HashedAudio:
    """Audio parts passed on, counted and hashed: the hash of the decoded samples says that
    the same music in another file is the same track."""

    def __init__(self, parts: Iterable[np.ndarray]) -> None:
        self._parts = parts
        self._digest = hashlib.sha256()
        self._samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self._parts:
            self._digest.update(np.ascontiguousarray(part))  # its buffer: no copy
            self._samples += part.size
            yield part

    @property
    def seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    @property
    def content_hash(self) -> str:
        return self._digest.hexdigest()


class Fingerprinting:
    """What the landmark chain stores of a track, gathered a block at a time."""

    def __init__(self) -> None:
        self._landmarks = TrackLandmarks()
        self._peaks: list[tuple[np.ndarray, np.ndarray]] = []
        self._any_peak = False

    def add(self, block: Block) -> None:
        t, f, rank = block_peaks(block, TRACK_PEAKS)
        self._landmarks.add(t, f, rank, until=block.stop)
        self._peaks.append((t, f))
        self._any_peak |= t.size > 0
        if block.stop * FRAME_SECONDS >= _PEAKS_WITHIN_S:
            self._refuse_if_peakless(f"The first {_PEAKS_WITHIN_S:g} s hold")

    def _refuse_if_peakless(self, where: str) -> None:
        if not self._any_peak:
            raise BadAudio("no_landmarks", f"{where} nothing to fingerprint (no spectral peaks "
                           "above -80 dB): is it music?", 422)

    def result(self) -> Fingerprint:
        self._refuse_if_peakless("The track holds")  # one shorter than _PEAKS_WITHIN_S
        hashes, frames = self._landmarks.result()
        t, f = (np.concatenate(column) for column in zip(*self._peaks))
        return Fingerprint(hashes, frames, encode_peaks(t, f))


def fingerprint(samples: np.ndarray) -> Fingerprint:
    """What the landmark chain stores of a whole track held in memory."""
    prints = Fingerprinting()
    for block in blocks([samples]):
        prints.add(block)
    return prints.result()


def embedding(parts: Iterable[np.ndarray], model: Model) -> Embedding:
    """What the embedding chain stores of a track, from its audio in parts."""
    return _embedding(model.scan(parts, _VECTOR_HOP_S))


def _embedding(windows: Windows) -> Embedding:
    vectors, starts = windows.result()
    return Embedding(vectors.astype(np.float16), starts, windows.model.style_vector(windows.statistics()),
                     windows.model.name)


def content_hash(samples: np.ndarray) -> str:
    """`HashedAudio.content_hash` of a whole track held in memory."""
    audio = HashedAudio([samples])
    for _ in audio:
        pass
    return audio.content_hash


def track_metadata(source: bytes | str | os.PathLike, source_name: str,
                   given: dict | None) -> dict[str, str]:
    """The owner's metadata over the file's tags (read only when some field is missing)."""
    given = {k: v for k, v in (given or {}).items() if k in METADATA_FIELDS and v}
    tags = {} if all(k in given for k in METADATA_FIELDS) else read_tags(source, METADATA_FIELDS)
    merged = {**tags, **given}
    merged.setdefault("title", Path(source_name).stem or "untitled")
    return merged


def embed_again(audio: Iterable[tuple[int, Path | None]], config: Config, model: Model
                ) -> tuple[dict[int, Embedding], list[int]]:
    """Tracks embedded again from their audio files (after a change of model), given as
    (id, file or None): ({id: its new embedding}, ids without a readable file, which keep
    their old vectors)."""
    return _again(audio, config, lambda parts: embedding(parts, model))


def melodies_again(audio: Iterable[tuple[int, Path | None]], config: Config
                   ) -> tuple[dict[int, np.ndarray], list[int]]:
    """Tracks' melody contours found again from their audio files (after a change of pitch.py),
    as `embed_again`."""
    return _again(audio, config, lambda parts: contour(parts, TRACK_LOWEST))


def _again(audio: Iterable[tuple[int, Path | None]], config: Config, analyse: Callable
           ) -> tuple[dict, list[int]]:
    done, missing = {}, []
    for track_id, path in audio:
        try:
            if path is None:
                raise BadAudio("unreadable", "no audio file")
            with closing(decode_track(path, config)) as parts:
                done[track_id] = analyse(parts)
        except BadAudio:  # gone, or no longer audio: the track keeps what it had
            missing.append(track_id)
    return done, missing


def expected_seconds(path: Path) -> float | None:
    """How long the audio in `path` is, if libsndfile can say so in-process (WAV, FLAC, Ogg,
    MP3): what a progress bar needs; None for other formats (asking FFmpeg would cost a
    process start, a fifth of a short track's analysis)."""
    try:
        return sf.info(str(path)).duration or None
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None


def audio_files(paths: Iterable[str | os.PathLike]) -> Iterable[Path]:
    """Files named, and audio files found recursively in folders named, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path
