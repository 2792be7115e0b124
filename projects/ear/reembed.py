"""A library's vectors made by the serving model (models.py), so that its index, and with it its
queries, follow a change of model. `ear models use` and the learning loop queue it as a job per
library (`reembed`, done by `ear worker`, which also queues it at its start for any library
left behind); `ear reindex --reembed` does it at once.

Every track is embedded again from its audio (ingest.embed_again) and the new vectors replace
the old in one rebuild, whose manifest records the model: queries switch model at that swap,
and the index keeps no other model's vectors (index.py). Then passes follow, until none is
needed, for what changed meanwhile: tracks added without vectors of the new model, or another
change of serving model. A track whose audio is gone cannot be embedded again: after a change
of model it leaves the embedding index (its landmarks still identify it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from . import jobs
from .catalog import Catalog
from .db import Track
from .ingest import embed_again
from .models import serving, serving_model, set_serving


def follow(catalog: Catalog, version: str) -> list[str]:
    """Serve `version` from now on, and queue the embedding again of every library whose
    index holds another's vectors: their names."""
    set_serving(catalog.config, version)
    return queue_behind(catalog)


def queue_behind(catalog: Catalog) -> list[str]:
    """Queue a `reembed` of each library whose index holds another model's vectors than the
    serving one's: their names."""
    current = serving(catalog.config)
    behind = [shelf.name for shelf in catalog.every_library() if shelf.model_name() != current]
    for name in behind:
        jobs.queue_reindex(name, jobs.REEMBED)
    return behind


def reembed(catalog: Catalog, library: str, progress: Callable[[float], None] | None = None,
            every_track: bool = False) -> tuple[int, list[int]]:
    """Make `library`'s vectors the serving model's: every track's if its index holds another
    model's (or `every_track`, e.g. after an update changed the shipped weights), else those
    of the tracks it has none of. (How many were embedded, the ids without audio.)
    `progress(share done)` is called before each track of the first pass (it may raise to stop)."""
    shelf = catalog.library(library)
    embedded, missing, first = 0, set(), True
    while True:
        model = serving_model(catalog.config)
        same = shelf.model_name() == model.name
        held = shelf.index.track_ids() if same and not (first and every_track) else set()
        tracks = [t for t in shelf.tracks() if t.id not in held and t.id not in missing]
        if same and not tracks:
            return embedded, sorted(missing)
        embeddings, gone = embed_again(_audio(catalog, tracks, progress if first else None),
                                       catalog.config, model)
        shelf.index.rebuild(force=True, replace={t: e.arrays() for t, e in embeddings.items()},
                            model=model.name)
        embedded, missing, first = embedded + len(embeddings), missing | set(gone), False


def _audio(catalog: Catalog, tracks: list[Track], progress: Callable[[float], None] | None
           ) -> Iterator[tuple[int, Path | None]]:
    for k, track in enumerate(tracks):
        if progress is not None:
            progress(k / len(tracks))
        yield track.id, catalog.audio_path(track)
