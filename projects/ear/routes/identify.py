"""POST /identify: which catalog track a clip is, and where in it; the answer's query id (the
query log's) is what feedback on it must carry. With ?explain=1, what the best match rested on
(explain.py), with its picture as SVG text."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from ..decode import SAMPLE_RATE
from ..explain import explain
from ..identify import identify
from ..heard import answered
from .helpers import (count_arg, candidate_json, explain_arg, library, log_query, one_query_at_a_time,
                      query_samples)

bp = Blueprint("identify", __name__)


@bp.post("/identify")
def identify_upload():
    started = time.perf_counter()
    wanted = count_arg("candidates", default=0)
    with one_query_at_a_time():
        samples = query_samples()
        answer = identify(library(), samples, candidates=wanted)
        best = answer.matches[0] if answer.matches else None
        why = explain(library(), samples, best) if best is not None and explain_arg() else None
    query_id = log_query((c.track.id for c in answer.matches + answer.candidates),
                         answered(best))
    extra = {"candidates": [candidate_json(m) for m in answer.candidates]} if wanted else {}
    if why is not None:
        extra["explain"] = why.to_json()
    return jsonify(query_id=query_id, matches=[candidate_json(m) for m in answer.matches], **extra,
                   query_seconds=round(samples.size / SAMPLE_RATE, 3),
                   elapsed_ms=round((time.perf_counter() - started) * 1000, 1))
