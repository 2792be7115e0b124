"""Many large libraries, made fast, for `ear libraries` to measure: N users, each with one real
track (the same music in every library, stored as an upload would be) and M − 1 synthetic ones.

A synthetic track has what a real track of `--track-seconds` leaves in the stores, in the
measured amounts (docs/reshaping.md: 29 landmarks, ~1 window vector a second): random landmark
hashes at random frames, random peaks, random unit vectors, a random style vector, and its row.
Uniform random hashes are kinder than music's (whose common hashes return more hits a lookup),
so a query's lookups here cost what they cost in a library of unusual music; what the
libraries' number costs (memory, opening a library, timing) is what this measures.

Run as `python -m ear.lab.synthetic_libraries DATA_DIR KEYS_JSON LIBRARIES TRACKS SECONDS TRACK`;
resumable: a library whose rows are all there is skipped. The keys (`ear users add`'s) are
written to KEYS_JSON with each library's real track's id.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .. import users
from ..catalog import Catalog
from ..config import load_config
from ..db import Track, User, database
from ..ids import track_ids
from ..embed import DIM, STYLE_DIM
from ..models import shipped_model
from ..features import F_MAX_BIN, FRAME_SECONDS
from ..ingest import prepare
from ..progress import Progress
from ..segments import encode_peaks, pack
from ..storage import read_json, write_json

LANDMARKS_PER_S = 29  # docs/reshaping.md: 759,121 landmarks in 7.3 h of real music
PEAKS_PER_S = 20
WINDOWS_PER_S = 1.0  # a 2 s window a second
_HASH_VALUES = 1 << 22
_ROWS_AT_ONCE = 500


def build(data_dir: Path, keys_json: Path, libraries: int, tracks: int, seconds: float,
          real_track: Path) -> None:
    config = load_config(data_dir=data_dir, database_url="")  # never the .env's database
    catalog = Catalog(config)
    real = prepare(real_track, config, shipped_model(), name=real_track.name)
    keys = read_json(keys_json) or {}
    rng = np.random.default_rng(14)
    progress = Progress(libraries)
    for n in range(libraries):
        name = f"user{n:03d}"
        started = time.perf_counter()
        if name not in keys:
            with database.connection_context():
                User.delete().where(User.name == name).execute()  # a key lost with a killed run
            keys[name] = {"key": users.add(name)[1]}
            write_json(keys_json, keys)
        library = catalog.library(name)
        if library.track_count() < tracks:
            [(track, _)] = catalog.store([real], name)
            keys[name]["real_id"] = track.id
            _add_synthetic(catalog, name, tracks - library.track_count(), seconds, rng)
            catalog.rebuild_index(name)
            write_json(keys_json, keys)
        progress.line(f"{name}: {library.track_count()} tracks ({time.perf_counter() - started:.1f} s)")
        progress.step()
    progress.done()


def _add_synthetic(catalog: Catalog, name: str, count: int, seconds: float,
                   rng: np.random.Generator) -> None:
    library = catalog.library(name)
    ids = track_ids(count)
    frames = int(seconds / FRAME_SECONDS)
    landmarks, peaks, vectors = {}, {}, {}
    starts = np.arange(int(seconds * WINDOWS_PER_S) - 1, dtype=np.float32) / WINDOWS_PER_S
    for tid in ids:
        at = np.sort(rng.integers(0, frames, int(seconds * LANDMARKS_PER_S)))
        landmarks[tid] = pack(rng.integers(0, _HASH_VALUES, at.size).astype(np.uint32), tid, at)
        peak_frames = np.sort(rng.integers(0, frames, int(seconds * PEAKS_PER_S)))
        peaks[tid] = encode_peaks(peak_frames, rng.integers(0, F_MAX_BIN, peak_frames.size))
        window = rng.standard_normal((starts.size, DIM)).astype(np.float32)
        window /= np.linalg.norm(window, axis=1, keepdims=True)
        vectors[tid] = (window.astype(np.float16), starts, rng.standard_normal(STYLE_DIM).astype(np.float32))
    with library.table.writing(), database.connection_context():
        library.table.add({tid: (landmarks[tid], peaks[tid]) for tid in ids})
        library.index.add(vectors, library.model_name())
        rows = [{"id": tid, "library": name, "title": f"synthetic {tid}", "duration": seconds,
                 "source": f"synthetic-{tid}.wav", "content_hash": f"synthetic-{tid}"} for tid in ids]
        with database.atomic():
            for first in range(0, len(rows), _ROWS_AT_ONCE):
                Track.insert_many(rows[first: first + _ROWS_AT_ONCE]).execute()


def main() -> int:
    data_dir, keys_json, libraries, tracks, seconds, track = sys.argv[1:7]
    build(Path(data_dir), Path(keys_json), int(libraries), int(tracks), float(seconds), Path(track))
    return 0


if __name__ == "__main__":
    sys.exit(main())
