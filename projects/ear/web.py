"""What a browser needs: the widget script, a demo page, catalog audio for the play button, and
the listeners' feedback."""
from __future__ import annotations

import functools
import subprocess
from html import escape
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for

from .db import Feedback, database
from .errors import EarError, NotFound

bp = Blueprint("web", __name__)
STATIC = Path(__file__).with_name("static")


@bp.get("/widget.js")
def widget():
    return send_file(STATIC / "widget.js", mimetype="text/javascript", max_age=3600)


@bp.get("/")
def demo():
    catalog = current_app.extensions["ear"]
    count = len(catalog.tracks())
    base = request.script_root + "/"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>ear</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#eee}}}}</style></head>
<body><h1>ear</h1>
<p>Play some music near your microphone (or choose a file), and ear says which of the
{count} tracks in this catalog it is, and where in it.</p>
<div data-ear data-api="{escape(base)}"></div>
<h2>Sounds like</h2>
<div data-ear data-mode="similar" data-api="{escape(base)}"></div>
<script src="{escape(base)}widget.js" defer></script>
</body></html>"""
    return Response(page, mimetype="text/html")


@bp.get("/tracks/<int:track_id>/audio")
def track_audio(track_id: int):
    catalog = current_app.extensions["ear"]
    if not catalog.config.allow_playback:
        raise EarError("playback_disabled", "The owner has not allowed playback (EAR_ALLOW_PLAYBACK).", 403)
    track = catalog.get(track_id)
    path = Path(track.source)
    if not path.is_file():
        raise NotFound("audio_not_found", "This track's audio file is no longer there.")
    # conditional=True: HTTP ranges, so the player can start at the matched offset.
    return send_file(path, conditional=True, max_age=3600)


@bp.get("/tracks/<int:track_id>/cover")
def track_cover(track_id: int):
    track = current_app.extensions["ear"].get(track_id)
    codec = _cover_codec(track.source)
    if codec not in _IMAGE_TYPES:
        raise NotFound("cover_not_found", "This track has no cover image.")
    image = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-i", track.source,
         "-map", "0:v:0", "-frames:v", "1", "-c:v", "copy", "-f", "image2pipe", "pipe:1"],
        capture_output=True, timeout=10).stdout
    if not image:
        raise NotFound("cover_not_found", "This track's cover image could not be read.")
    response = Response(image, mimetype=_IMAGE_TYPES[codec])
    response.cache_control.max_age = 86400
    return response


_IMAGE_TYPES = {"mjpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}


def _cover_codec(source: str) -> str:
    path = Path(source)
    if not path.is_file():
        return ""
    return _probe_cover(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _probe_cover(path: str, mtime_ns: int) -> str:
    """The codec of the file's attached picture, or "" (asked once per file version)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-select_streams", "v",
         "-show_entries", "stream=codec_name:stream_disposition=attached_pic", "-of", "csv=p=0", path],
        capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        codec, _, attached = line.partition(",")
        if attached.strip() == "1":
            return codec.strip()
    return ""


def audio_url(track_json: dict) -> dict:
    """The track's JSON with `audio_url` when the owner allows playback and the file is there,
    and `cover_url` when the file has a cover image."""
    catalog = current_app.extensions["ear"]
    source = track_json.get("source", "")
    if catalog.config.allow_playback and Path(source).is_file():
        track_json["audio_url"] = url_for("web.track_audio", track_id=track_json["id"], _external=True)
    if _cover_codec(source) in _IMAGE_TYPES:
        track_json["cover_url"] = url_for("web.track_cover", track_id=track_json["id"], _external=True)
    return track_json


@bp.post("/feedback")
def feedback():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise EarError("bad_feedback", "Send a JSON object: {\"verdict\": \"right\"|\"wrong\", ...}.")
    verdict = data.get("verdict")
    if verdict not in ("right", "wrong"):
        raise EarError("bad_feedback", "verdict must be \"right\" or \"wrong\".")
    try:
        track_id = None if data.get("track_id") is None else int(data["track_id"])
        offset_s = None if data.get("offset_s") is None else float(data["offset_s"])
        confidence = None if data.get("confidence") is None else float(data["confidence"])
    except (TypeError, ValueError):
        raise EarError("bad_feedback", "track_id, offset_s and confidence must be numbers.") from None
    actual = str(data.get("actual") or "")[:500]
    with database.connection_context():
        row = Feedback.create(track_id=track_id, verdict=verdict, actual=actual,
                              offset_s=offset_s, confidence=confidence)
    return jsonify(feedback=row.to_json()), 201
