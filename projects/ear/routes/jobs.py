"""The ingest jobs (admin): each one's state, progress and outcome, and the newest of them."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import jobs
from ..errors import NotFound
from .helpers import admin_required, count_arg, jobs_json

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@admin_required
def list_jobs():
    return jsonify(jobs=jobs_json(jobs.recent(count_arg("n", 100, lowest=1))))


@bp.get("/jobs/<int:job_id>")
@admin_required
def get_job(job_id: int):
    job = jobs.get(job_id)
    if job is None:
        raise NotFound("job_not_found", f"No job with id {job_id}.")
    return jsonify(job=jobs_json([job])[0])
