"""The caller's ingest jobs (a user's own; the admin's: every library's): each one's state,
progress and outcome, and the newest of them."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import jobs
from ..errors import NotFound
from .helpers import caller, count_arg, jobs_json, key_required

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@key_required
def list_jobs():
    return jsonify(jobs=jobs_json(jobs.recent(count_arg("n", 100, lowest=1), caller().sees)))


@bp.get("/jobs/<int:job_id>")
@key_required
def get_job(job_id: int):
    job = jobs.get(job_id, caller().sees)
    if job is None:
        raise NotFound("job_not_found", f"No job with id {job_id}.")
    return jsonify(job=jobs_json([job])[0])
