"""What the site and its visitors get besides answers: the widget script, the demo page, the
listeners' feedback (on a logged answer, once each: `querylog.py`), and the health
check."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from flask import Blueprint, jsonify, render_template, request, send_file

from .. import jobs
from ..db import Feedback
from ..errors import EarError
from ..segments import MAX_TRACK_ID
from .helpers import caller, feedback_limit, library, query_log

bp = Blueprint("site", __name__)
WIDGET = Path(__file__).resolve().parents[1] / "static" / "widget.js"
_WIDGET_MAX_AGE_S = 3600
_ACTUAL_MAX_CHARS = 500  # of a listener's "it was …"
FEEDBACK_MAX_BYTES = 4096  # a verdict, a few numbers and a few words: nothing more belongs in a row
_QUERY_ID_MAX_CHARS = 64  # ear's own are 22; a longer one is no id of ours
# Per client address. A listener rates an answer once, and an answer takes seconds to get: 10 a
# minute is more than a person clicks, and a burst of 5 lets a few answers in a row be rated at
# once; a script filling the table gets 429. (nginx/ear.conf and ear-limits.conf say the same.)
FEEDBACK_PER_MINUTE = 10
FEEDBACK_BURST = 5


@bp.get("/widget.js")
def widget():
    return send_file(WIDGET, mimetype="text/javascript", max_age=_WIDGET_MAX_AGE_S)


@bp.get("/")
def demo():
    return render_template("demo.html", count=library().track_count(),
                           base=request.script_root + "/")


@bp.get("/health")
def health():
    shelf = library()  # the caller's: a visitor's is the public library
    shelf.table.refresh()
    shelf.index.refresh()
    health = dict(status="ok", library=shelf.name, tracks=shelf.track_count(),
                  landmarks=shelf.table.landmark_count, embedding_windows=shelf.index.window_count,
                  torch_threads=torch.get_num_threads())
    if caller().admin:  # how busy the owner's uploads keep ear is the owner's business
        health["jobs"] = jobs.counts()
    return jsonify(health)


@bp.post("/feedback")
def feedback():
    # ProxyFix (one proxy trusted) makes this the client's address behind Nginx too.
    feedback_limit().take(request.remote_addr or "")
    body = request.stream.read(FEEDBACK_MAX_BYTES + 1)
    if len(body) > FEEDBACK_MAX_BYTES:
        raise EarError("feedback_too_large", f"Feedback is at most {FEEDBACK_MAX_BYTES} bytes.", 413)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    fields = _feedback_fields(data)
    with query_log().claim(fields["query_id"], fields["track_id"]) as searched:
        row = Feedback.create(**fields, library=searched)
    return jsonify(feedback=row.to_json()), 201


def _feedback_fields(data) -> dict:
    """The row a listener's verdict makes, or the error `bad_feedback` saying what is wrong."""
    if not isinstance(data, dict):
        raise EarError("bad_feedback", "Send a JSON object: {\"verdict\": \"right\"|\"wrong\", ...}.")
    if data.get("verdict") not in ("right", "wrong"):
        raise EarError("bad_feedback", "verdict must be \"right\" or \"wrong\".")
    query_id = data.get("query_id")
    if not isinstance(query_id, str) or not 0 < len(query_id) <= _QUERY_ID_MAX_CHARS:
        raise EarError("bad_feedback", "query_id must be the query_id of the answer (from /identify).")
    raw_id = data.get("track_id")
    if isinstance(raw_id, bool) or (isinstance(raw_id, float) and not raw_id.is_integer()):
        raise EarError("bad_feedback", "track_id must be a whole number.")
    try:
        track_id = None if raw_id is None else int(raw_id)
        numbers = {name: None if data.get(name) is None else float(data[name])
                   for name in ("offset_s", "confidence")}
    except (TypeError, ValueError, OverflowError):
        raise EarError("bad_feedback", "track_id, offset_s and confidence must be numbers.") from None
    if track_id is not None and not 0 < track_id <= MAX_TRACK_ID:
        raise EarError("bad_feedback", f"track_id must be between 1 and {MAX_TRACK_ID}.")
    if not all(math.isfinite(x) for x in numbers.values() if x is not None):
        raise EarError("bad_feedback", "offset_s and confidence must be finite numbers.")
    # JSON may carry lone surrogates (a \ud800 escape), which SQLite's text cannot hold.
    actual = str(data.get("actual") or "")[:_ACTUAL_MAX_CHARS].encode("utf-8", "replace").decode()
    return {"verdict": data["verdict"], "track_id": track_id, **numbers, "actual": actual,
            "query_id": query_id}
