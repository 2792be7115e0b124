"""The caller's tracks (routes/helpers.py: a visitor's are the public library's): list, look up,
add (queued as jobs), describe (title, artist, album, genre) and remove (with a key), and each
track's audio, cover and video frames."""
from __future__ import annotations

import json
import math
from pathlib import PurePath

from flask import Blueprint, Response, jsonify, request, send_file

from ..cover import cover_image, cover_type
from ..originals import audio_type
from ..db import METADATA_FIELDS
from ..errors import EarError, NotFound
from .helpers import (caller, catalog, jobs_json, key_required, track_json, upload_fields,
                      uploaded_files, visible_track)

bp = Blueprint("tracks", __name__)
_MEDIA_MAX_AGE_S = 3600


@bp.get("/tracks")
def list_tracks():
    sees = caller().sees
    found = catalog().tracks() if sees is None else catalog().library(sees).tracks()
    return jsonify(tracks=[track_json(t) for t in found])


@bp.get("/tracks/<int:track_id>")
def get_track(track_id: int):
    return jsonify(track_json(visible_track(track_id)))


@bp.post("/tracks")
@key_required
def add_tracks():
    """Each `audio` file kept durably and queued for `ear worker`: 202 with a job per file
    (`job`: the first, the only one when one file was sent)."""
    fields = upload_fields()
    metadata = {k: fields.get(k, "").strip() for k in METADATA_FIELDS}
    uploads = uploaded_files()
    queued = [catalog().queue_upload(stream, PurePath(filename).suffix,
                                     (len(uploads) == 1 and fields.get("source")) or filename, metadata,
                                     caller().searches)
              for stream, filename in uploads]  # a source (a label, never opened) names one file
    answer = jobs_json(queued)
    return jsonify(job=answer[0], jobs=answer), 202, {"Location": answer[0]["url"]}


@bp.patch("/tracks/<int:track_id>")
@key_required
def describe_track(track_id: int):
    try:
        changes = json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):
        changes = None
    if not isinstance(changes, dict):
        raise EarError("bad_metadata", "Send a JSON object: {\"title\": ..., \"artist\": ...}.")
    track = visible_track(track_id)
    return jsonify(track_json(catalog().library(track.library).describe(track_id, changes)))


@bp.delete("/tracks/<int:track_id>")
@key_required
def delete_track(track_id: int):
    track = catalog().remove(track_id, caller().sees)
    catalog().request_rebuild(track.library)
    return jsonify(removed=track.to_json(brief=True, path=caller().admin))


@bp.get("/tracks/<int:track_id>/audio")
def track_audio(track_id: int):
    if not catalog().config.allow_playback:
        raise EarError("playback_disabled", "The owner has not allowed playback (EAR_ALLOW_PLAYBACK).", 403)
    track = visible_track(track_id)
    path = catalog().audio_path(track)
    if path is None:
        raise NotFound("audio_not_found", "This track's audio file is not there.")
    # conditional=True: HTTP ranges, so the player can start at the matched offset. A kept
    # original is named by its content: that name is its ETag, and the track's date its date
    # (the file's own would change when another user uploads the same bytes).
    response = send_file(path, conditional=True, max_age=_MEDIA_MAX_AGE_S,
                         mimetype=audio_type(path.suffix), etag=track.original or True,
                         last_modified=track.added_at if track.original else None)
    response.headers["X-Content-Type-Options"] = "nosniff"  # audio, never read as a page
    return _cached_for_the_caller(response)


@bp.get("/tracks/<int:track_id>/cover")
def track_cover(track_id: int):
    path = catalog().audio_path(visible_track(track_id))
    mimetype = cover_type(path) if path else None
    if mimetype is None:
        raise NotFound("cover_not_found", "This track has no cover image.")
    image = cover_image(path)
    if not image:
        raise NotFound("cover_not_found", "This track's cover image could not be read.")
    response = Response(image, mimetype=mimetype)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.max_age = 24 * _MEDIA_MAX_AGE_S
    return _cached_for_the_caller(response)


@bp.get("/tracks/<int:track_id>/frame")
def track_frame(track_id: int):
    """The video frame nearest `t` seconds into the track (frames.py)."""
    try:
        seconds = float(request.args.get("t", "0"))
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds):
        raise EarError("bad_time", "t must be a number of seconds into the track, e.g. ?t=40.5.")
    path = catalog().frames.nearest(visible_track(track_id).id, seconds)
    if path is None:
        raise NotFound("frame_not_found", "This track has no video frames.")
    # A frame's bytes never change under its name (a track's frames are written once): its
    # ETag is its name and its track, and a browser may keep it as long as a cover.
    response = send_file(path, mimetype="image/jpeg", conditional=True, max_age=24 * _MEDIA_MAX_AGE_S,
                         etag=f"{track_id}-{path.stem}")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return _cached_for_the_caller(response)


def _cached_for_the_caller(response: Response) -> Response:
    """A keyed caller's media is theirs: cached by their own browser only, never by a proxy."""
    if caller().keyed:
        response.cache_control.public = False
        response.cache_control.private = True
        response.vary.add("Authorization")
    return response
