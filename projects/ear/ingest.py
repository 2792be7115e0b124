"""A track in: decode it once, read its tags, and compute what every chain stores of it.

`prepare` is the slow part of adding a track (decode, landmarks, peaks, vectors) and holds no
lock; `Catalog.store` then writes what it prepared. Metadata given by the owner wins over the
file's tags; a track with no title is named after its file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .config import Config
from .db import METADATA_FIELDS, Track
from .decode import SAMPLE_RATE, decode_track, read_tags
from .embed import Model
from .features import TRACK_PEAKS, peaks
from .hashes import track_landmarks
from .segments import encode_peaks

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac",
                  ".webm", ".mka", ".wma", ".aif", ".aiff", ".xm", ".mod", ".it", ".s3m"}
_VECTOR_HOP_S = 1.0  # a stored window every second: queries' windows are offset by ≤ 0.5 s


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


@dataclass(frozen=True)
class PreparedTrack:
    """A decoded, analysed track not yet stored."""

    source: str
    metadata: dict[str, str]
    duration: float
    content_hash: str  # of the decoded audio: the same music in another file is the same track
    fingerprint: Fingerprint
    embedding: Embedding | None  # None: stored for identification by fingerprint only


def prepare(source: bytes | str | os.PathLike, config: Config, model: Model,
            name: str | None = None, metadata: dict | None = None) -> PreparedTrack:
    """Decode and analyse one track: a file path, or the bytes of an upload (then `name`
    says where it came from)."""
    samples = decode_track(source, config)
    source_name = name or str(source)
    return PreparedTrack(source_name, track_metadata(source, source_name, metadata),
                         samples.size / SAMPLE_RATE, content_hash(samples),
                         fingerprint(samples), embedding(samples, model))


def track_metadata(source: bytes | str | os.PathLike, source_name: str,
                   given: dict | None) -> dict[str, str]:
    """The owner's metadata over the file's tags (read only when some field is missing)."""
    given = {k: v for k, v in (given or {}).items() if k in METADATA_FIELDS and v}
    tags = {} if all(k in given for k in METADATA_FIELDS) else read_tags(source, METADATA_FIELDS)
    merged = {**tags, **given}
    merged.setdefault("title", Path(source_name).stem or "untitled")
    return merged


def content_hash(samples: np.ndarray) -> str:
    return hashlib.sha256(samples.tobytes()).hexdigest()


def fingerprint(samples: np.ndarray) -> Fingerprint:
    t, f, peak_rank = peaks(samples, TRACK_PEAKS)
    hashes, frames = track_landmarks(t, f, peak_rank)
    return Fingerprint(hashes, frames, encode_peaks(t, f))


def embedding(samples: np.ndarray, model: Model) -> Embedding:
    vectors, starts, style = model.analyse(samples, hop_s=_VECTOR_HOP_S)
    return Embedding(vectors.astype(np.float16), starts, style)


def embed_again(tracks: Iterable[Track], config: Config, model: Model
                ) -> tuple[dict[int, Embedding], list[int]]:
    """Every track embedded again from its source file (after a change of model): ({id: its
    new embedding}, ids whose source is gone and keep their old vectors)."""
    done, missing = {}, []
    for track in tracks:
        if Path(track.source).is_file():
            done[track.id] = embedding(decode_track(track.source, config), model)
        else:
            missing.append(track.id)
    return done, missing


def audio_files(paths: Iterable[str | os.PathLike]) -> Iterable[Path]:
    """Files named, and audio files found recursively in folders named, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path
