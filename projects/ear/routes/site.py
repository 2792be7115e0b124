"""What the site and its visitors get besides answers: the widget script, the demo page, the
listeners' feedback, and the health check."""
from __future__ import annotations

from pathlib import Path

import torch
from flask import Blueprint, jsonify, render_template, request, send_file

from ..db import Feedback, database
from ..errors import EarError
from .helpers import catalog

bp = Blueprint("site", __name__)
WIDGET = Path(__file__).resolve().parents[1] / "static" / "widget.js"
_WIDGET_MAX_AGE_S = 3600
_ACTUAL_MAX_CHARS = 500  # of a listener's "it was …"


@bp.get("/widget.js")
def widget():
    return send_file(WIDGET, mimetype="text/javascript", max_age=_WIDGET_MAX_AGE_S)


@bp.get("/")
def demo():
    return render_template("demo.html", count=len(catalog().tracks()),
                           base=request.script_root + "/")


@bp.get("/health")
def health():
    table, index = catalog().table, catalog().index
    table.refresh()
    index.refresh()
    return jsonify(status="ok", tracks=len(table.track_ids()), landmarks=table.landmark_count,
                   embedding_windows=index.window_count, torch_threads=torch.get_num_threads())


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
    actual = str(data.get("actual") or "")[:_ACTUAL_MAX_CHARS]
    with database.connection_context():
        row = Feedback.create(track_id=track_id, verdict=verdict, actual=actual,
                              offset_s=offset_s, confidence=confidence)
    return jsonify(feedback=row.to_json()), 201
