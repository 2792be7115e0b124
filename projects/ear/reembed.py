"""A library's vectors made again by the serving model (models.py), so that its index, and with
it its queries, follow a change of model. `ear models use` and the learning loop queue it as a
job per library (`reembed`, done by `ear worker`); `ear reindex --reembed` does it at once.

Every track is embedded again from its audio (ingest.embed_again) and the new vectors replace
the old in one rebuild, whose manifest records the model: queries switch model at that swap, so
none compares vectors of two models. Tracks added meanwhile are embedded again in another pass.
A track whose audio is gone cannot be: after a change of model its old vectors would answer
nonsense, so it leaves the embedding index (its landmarks still identify it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from . import jobs
from .catalog import Catalog
from .db import Track
from .ingest import embed_again
from .models import serving_model, set_serving


def follow(catalog: Catalog, version: str) -> list[str]:
    """Serve `version` (models.py) from now on, and queue the embedding again of every library
    whose index holds another's vectors: their names."""
    set_serving(catalog.config, version)
    behind = [shelf.name for shelf in catalog.every_library() if shelf.model_name() != version]
    for name in behind:
        jobs.queue_reindex(name, jobs.REEMBED)
    return behind


def reembed(catalog: Catalog, library: str, progress: Callable[[float], None] | None = None
            ) -> tuple[int, list[int]]:
    """Embed `library`'s tracks again with the serving model: (how many, ids without audio).
    `progress(share done)` is called before each track (it may raise to stop)."""
    model = serving_model(catalog.config)
    shelf = catalog.library(library)
    done: set[int] = set()
    embedded, missing = 0, []
    while True:
        tracks = [t for t in shelf.tracks() if t.id not in done]
        if done and not tracks:
            return embedded, missing
        embeddings, gone = embed_again(_audio(catalog, tracks, progress if not done else None),
                                       catalog.config, model)
        if gone and shelf.index.model != model.name:
            shelf.index.remove(gone)
        shelf.index.rebuild(force=True, replace={t: e.arrays() for t, e in embeddings.items()},
                            model=model.name)
        done |= {t.id for t in tracks}
        embedded, missing = embedded + len(embeddings), missing + gone


def _audio(catalog: Catalog, tracks: list[Track], progress: Callable[[float], None] | None
           ) -> Iterator[tuple[int, Path | None]]:
    for k, track in enumerate(tracks):
        if progress is not None:
            progress(k / len(tracks))
        yield track.id, catalog.audio_path(track)
