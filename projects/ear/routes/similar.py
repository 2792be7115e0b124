"""What sounds like it: POST /similar (a clip), GET /tracks/<id>/similar, GET /radio."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, jsonify, request

from ..errors import EarError
from ..similar import radio, similar_to_clip, similar_to_track
from ..heard import answered
from .helpers import (candidate_json, catalog, filters_arg, k_arg, library, log_query,
                      one_query_at_a_time, query_samples, similar_json, track_json, visible_track)

bp = Blueprint("similar", __name__)
RADIO_LENGTH = 10  # tracks in a playlist unless `k` says otherwise
_SEED_DIGITS = 18


@bp.post("/similar")
def similar_to_upload():
    with one_query_at_a_time():
        samples = query_samples()
        identified, found = similar_to_clip(library(), samples, k_arg(), filters_arg())
    offered = ([identified.track.id] if identified else []) + [s.track.id for s in found]
    # The widget asks "right?" of the identified track here too: feedback needs the query id.
    return jsonify(query_id=log_query(offered, answered(identified)),
                   identified=candidate_json(identified) if identified else None,
                   basis="track" if identified else "clip",
                   matches=[similar_json(s) for s in found])


@bp.get("/tracks/<int:track_id>/similar")
def similar_to_stored(track_id: int):
    track = visible_track(track_id)  # the admin's may be any library's: searched in its own
    found = similar_to_track(catalog().library(track.library), track_id, k_arg(), filters_arg())
    return jsonify(track=track_json(track), matches=[similar_json(s) for s in found])


@bp.get("/radio")
def artist_radio():
    artist = request.args.get("artist", "").strip()
    if not artist:
        raise EarError("missing_artist", "Say whose radio: /radio?artist=NAME.")
    seed = request.args.get("seed", "")
    if seed and not (seed.isascii() and seed.isdigit() and len(seed) <= _SEED_DIGITS):
        raise EarError("bad_parameter", f"seed must be a whole number of up to {_SEED_DIGITS} "
                       "digits (it repeats a playlist).")
    rng = np.random.default_rng(int(seed) if seed else None)
    found = radio(library(), artist, k_arg() if "k" in request.args else RADIO_LENGTH, rng)
    return jsonify(artist=artist, tracks=[similar_json(s) for s in found])
