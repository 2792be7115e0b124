"""POST /hum: which of the library's tracks carry the melody hummed or sung in an upload, and
where in them; no melody in it is `no_melody` (422). With ?explain=1, the hum over the best
match's melody (explain.py), with its picture as SVG text."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from ..decode import SAMPLE_RATE
from ..explain import explain_hum
from ..heard import hummed
from ..hum import search
from .helpers import caller, explain_arg, k_arg, library, log_query, one_query_at_a_time, query_samples, with_media

bp = Blueprint("hum", __name__)


@bp.post("/hum")
def hum_upload():
    started = time.perf_counter()
    shelf, k = library(), k_arg()
    with one_query_at_a_time():
        samples = query_samples()
        found = [m for m in search(shelf.melodies, samples, k=k) if m.is_match]
        rows = shelf.rows(m.track_id for m in found)
        found = [m for m in found if m.track_id in rows]
        why = (explain_hum(shelf, samples, found[0], rows[found[0].track_id].title)
               if found and explain_arg() else None)
    query_id = log_query((m.track_id for m in found), hummed(found[0] if found else None))
    matches = [with_media(m.to_json(rows[m.track_id], path=caller().admin), rows[m.track_id]) for m in found]
    extra = {"explain": why.to_json()} if why is not None else {}
    return jsonify(query_id=query_id, matches=matches, **extra, query_seconds=round(samples.size / SAMPLE_RATE, 3),
                   elapsed_ms=round((time.perf_counter() - started) * 1000, 1))
