"""What sounds like it: tracks near a track's or a clip's style vector, and an artist's radio.

A clip that is identified gets "more like this track"; any other clip gets tracks that sound
like the clip itself. Filters (artist, genre, artist left out) are applied to the nearest
tracks, widening the search until enough pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .libraries import Library
from .db import Track
from .embed import unit
from .errors import NotFound
from .identify import Candidate, as_candidates, identification

SURE_ENOUGH = 0.5  # the confidence at which a clip is taken to be its identified track
_RADIO_POOL = 3  # a radio playlist of k is drawn from the 3k nearest tracks


@dataclass(frozen=True)
class Similar:
    track: Track
    score: float  # cosine similarity of the style vectors, 1 = the same

    def to_json(self, path: bool = True) -> dict:
        """`path`: as `Track.to_json`."""
        return {"track": self.track.to_json(brief=True, path=path), "score": self.score}


@dataclass(frozen=True)
class Filters:
    artist: str = ""  # only this artist's tracks
    genre: str = ""  # only this genre
    exclude_artist: str = ""  # none of this artist's tracks

    def admit(self, track: Track) -> bool:
        return ((not self.artist or track.artist == self.artist)
                and (not self.genre or track.genre == self.genre)
                and (not self.exclude_artist or track.artist != self.exclude_artist))


def similar_to_track(library: Library, track_id: int, k: int,
                     filters: Filters = Filters()) -> list[Similar]:
    library.get(track_id)  # 404 for an unknown track
    library.index.refresh()
    vector = library.index.track_vector(track_id)
    if vector is None:
        return []
    return _nearest(library, vector, k, {track_id}, filters)


def similar_to_clip(library: Library, samples: np.ndarray, k: int,
                    filters: Filters = Filters()) -> tuple[Candidate | None, list[Similar]]:
    """(the track the clip was identified as, if confidently; tracks like it)."""
    found = identification(library, samples)
    matches = as_candidates(library, found.matches[:1])  # only the best one is used
    if matches and matches[0].confidence >= SURE_ENOUGH:
        return matches[0], similar_to_track(library, matches[0].track.id, k, filters)
    library.index.refresh()
    style = found.clip_style  # embedded already unless the landmarks were sure
    if style is None:
        style = library.model().clip_vector(samples)
    return None, _nearest(library, style, k, set(), filters)


def radio(library: Library, artist: str, k: int, rng: np.random.Generator) -> list[Similar]:
    """A playlist for fans of `artist`: tracks near theirs, by other artists, drawn at random
    from the nearest few times `k` (a different list each time, always relevant)."""
    own = library.ids_by_artist(artist)
    if not own:
        raise NotFound("artist_not_found", f"No track by {artist!r} in the library.")
    library.index.refresh()
    vectors = [v for v in (library.index.track_vector(t) for t in own) if v is not None]
    if not vectors:
        return []
    pool = _nearest(library, unit(np.mean(vectors, axis=0)), _RADIO_POOL * k, set(own),
                    Filters(exclude_artist=artist))
    if len(pool) <= k:
        return pool
    weights = np.array([max(s.score, 0.0) + 0.05 for s in pool])
    pick = rng.choice(len(pool), k, replace=False, p=weights / weights.sum())
    return [pool[i] for i in sorted(pick)]


def _nearest(library: Library, vector: np.ndarray, k: int, exclude_ids: set[int],
             filters: Filters) -> list[Similar]:
    n = 4 * k + len(exclude_ids) + 10
    while True:  # filters may reject many: widen the search until k pass or all were seen
        ids, sims = library.index.search_tracks(vector, n)
        found = [(int(i), float(sim)) for i, sim in zip(ids, sims) if int(i) not in exclude_ids]
        rows = library.rows(tid for tid, _ in found)  # ids SQLite does not know are left out
        out = [Similar(rows[tid], round(sim, 4)) for tid, sim in found
               if tid in rows and filters.admit(rows[tid])]
        if len(out) >= k or len(ids) < n:
            return out[:k]
        n *= 4
