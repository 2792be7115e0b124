"""The catalog's tracks: list, look up, add and remove (admin), and each track's audio and cover."""
from __future__ import annotations

from pathlib import PurePath

from flask import Blueprint, Response, jsonify, send_file

from ..cover import cover_image, cover_type
from ..originals import audio_type
from ..db import METADATA_FIELDS, Track
from ..errors import EarError, NotFound
from ..embed import shared_model
from .helpers import admin_required, catalog, track_json, upload_fields, uploaded_file

bp = Blueprint("tracks", __name__)
_MEDIA_MAX_AGE_S = 3600


@bp.get("/tracks")
def list_tracks():
    return jsonify(tracks=[track_json(t) for t in catalog().tracks()])


@bp.get("/tracks/<int:track_id>")
def get_track(track_id: int):
    return jsonify(track_json(catalog().get(track_id)))


@bp.post("/tracks")
@admin_required
def add_track():
    stream, filename = uploaded_file()
    fields = upload_fields()
    metadata = {k: fields.get(k, "").strip() for k in METADATA_FIELDS}
    label = fields.get("source") or filename  # a label: never opened as a path
    kept = catalog().keep_and_prepare(stream, PurePath(filename).suffix, label, metadata, shared_model())
    if isinstance(kept, Track):  # these very bytes are a track already
        return jsonify(created=False, track=track_json(kept)), 200
    [(track, created)] = catalog().store([kept])
    if created:
        catalog().request_rebuild()
    return jsonify(created=created, track=track_json(track)), 201 if created else 200


@bp.delete("/tracks/<int:track_id>")
@admin_required
def delete_track(track_id: int):
    track = catalog().remove(track_id)
    catalog().request_rebuild()
    return jsonify(removed=track.to_json(brief=True))  # to the admin: the whole source


@bp.get("/tracks/<int:track_id>/audio")
def track_audio(track_id: int):
    if not catalog().config.allow_playback:
        raise EarError("playback_disabled", "The owner has not allowed playback (EAR_ALLOW_PLAYBACK).", 403)
    path = catalog().audio_path(catalog().get(track_id))
    if path is None:
        raise NotFound("audio_not_found", "This track's audio file is not there.")
    # conditional=True: HTTP ranges, so the player can start at the matched offset.
    response = send_file(path, conditional=True, max_age=_MEDIA_MAX_AGE_S,
                         mimetype=audio_type(path.suffix))
    response.headers["X-Content-Type-Options"] = "nosniff"  # audio, never read as a page
    return response


@bp.get("/tracks/<int:track_id>/cover")
def track_cover(track_id: int):
    path = catalog().audio_path(catalog().get(track_id))
    mimetype = cover_type(path) if path else None
    if mimetype is None:
        raise NotFound("cover_not_found", "This track has no cover image.")
    image = cover_image(path)
    if not image:
        raise NotFound("cover_not_found", "This track's cover image could not be read.")
    response = Response(image, mimetype=mimetype)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.max_age = 24 * _MEDIA_MAX_AGE_S
    return response
