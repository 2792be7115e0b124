"""HTTP routes: thin, each one a call into the catalog."""
from __future__ import annotations

import hmac
import time
from functools import wraps

import numpy as np
import torch
from flask import Blueprint, current_app, jsonify, request, url_for

from .catalog import Catalog, METADATA_FIELDS
from .decode import SAMPLE_RATE, decode
from .errors import EarError
from .web import audio_url

bp = Blueprint("api", __name__)


def catalog() -> Catalog:
    return current_app.extensions["ear"]


def uploaded_audio() -> tuple[bytes, str]:
    """The audio of a request: multipart field `audio`, or else the raw body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("audio")
        if upload is None:
            raise EarError("missing_audio", "Send the audio in the multipart field 'audio'.")
        return upload.read(), upload.filename or "upload"
    # Any other content type (curl --data-binary sends a form type) is the audio itself.
    return request.get_data(cache=False, parse_form_data=False), "upload"


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        token = catalog().config.admin_token
        if not token:
            raise EarError("admin_disabled", "Set EAR_ADMIN_TOKEN to allow changes over HTTP.", 403)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise EarError("unauthorized", "A valid 'Authorization: Bearer <admin token>' is needed.", 401)
        return view(*args, **kwargs)
    return wrapper


def with_links(match_json: dict) -> dict:
    audio_url(match_json["track"])
    return match_json


def track_json(track) -> dict:
    return {**track.to_json(), "url": url_for("api.get_track", track_id=track.id, _external=True)}


@bp.get("/health")
def health():
    table = catalog().table
    table.refresh()
    index = catalog().index
    index.refresh()
    return jsonify(status="ok", tracks=len(table.track_ids()), landmarks=table.landmark_count,
                   embedding_windows=index.window_count, torch_threads=torch.get_num_threads())


@bp.post("/identify")
def identify():
    started = time.perf_counter()
    config = catalog().config
    wanted = requested_count("candidates", default=0)
    data, _ = uploaded_audio()
    samples = decode(data, max_seconds=config.max_query_seconds, timeout_s=config.decode_timeout_s)
    matches, candidates = catalog().identify_with_candidates(samples, wanted)
    extra = {"candidates": [with_links(m.to_json()) for m in candidates]} if wanted else {}
    return jsonify(
        matches=[with_links(m.to_json()) for m in matches], **extra,
        query_seconds=round(samples.size / SAMPLE_RATE, 3),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def similar_filters() -> dict:
    return {name: request.args.get(name, "").strip()
            for name in ("artist", "genre", "exclude_artist")}


def requested_k() -> int:
    return requested_count("k", default=catalog().config.top_k, lowest=1)


def requested_count(name: str, default: int, lowest: int = 0) -> int:
    raw = request.args.get(name, "")
    try:
        n = int(raw) if raw else default
    except ValueError:
        raise EarError("bad_parameter", f"{name} must be a whole number.") from None
    if not lowest <= n <= 100:
        raise EarError("bad_parameter", f"{name} must be between {lowest} and 100.")
    return n


@bp.post("/similar")
def similar_to_upload():
    config = catalog().config
    data, _ = uploaded_audio()
    samples = decode(data, max_seconds=config.max_query_seconds, timeout_s=config.decode_timeout_s)
    identified, found = catalog().similar_to_clip(samples, requested_k(), **similar_filters())
    return jsonify(identified=with_links(identified.to_json()) if identified else None,
                   basis="track" if identified else "clip",
                   matches=[s.to_json() for s in found])


@bp.get("/tracks/<int:track_id>/similar")
def similar_to_track(track_id: int):
    found = catalog().similar_to_track(track_id, requested_k(), **similar_filters())
    return jsonify(track=track_json(catalog().get(track_id)), matches=[s.to_json() for s in found])


@bp.get("/radio")
def radio():
    artist = request.args.get("artist", "").strip()
    if not artist:
        raise EarError("missing_artist", "Say whose radio: /radio?artist=NAME.")
    seed = request.args.get("seed", "")
    if seed and not seed.isdigit():
        raise EarError("bad_parameter", "seed must be a whole number (it repeats a playlist).")
    rng = np.random.default_rng(int(seed) if seed else None)
    found = catalog().radio(artist, requested_k() if "k" in request.args else 10, rng)
    return jsonify(artist=artist, tracks=[s.to_json() for s in found])


@bp.get("/tracks")
def list_tracks():
    return jsonify(tracks=[track_json(t) for t in catalog().tracks()])


@bp.get("/tracks/<int:track_id>")
def get_track(track_id: int):
    return jsonify(track_json(catalog().get(track_id)))


@bp.post("/tracks")
@admin_required
def add_track():
    data, filename = uploaded_audio()
    metadata = {k: request.form.get(k, "").strip() for k in METADATA_FIELDS}
    track, created = catalog().add(data, name=request.form.get("source") or filename,
                                   metadata=metadata)
    if created:
        catalog().request_rebuild()
    return jsonify(created=created, track=track_json(track)), 201 if created else 200


@bp.delete("/tracks/<int:track_id>")
@admin_required
def delete_track(track_id: int):
    track = catalog().remove(track_id)
    catalog().request_rebuild()
    return jsonify(removed=track.to_json(brief=True))
