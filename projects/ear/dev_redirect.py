"""For the personal site's own Flask app: in development, send /ear/... to ear on port 5001.

In production Nginx routes /ear/ to ear before the site sees it; on a laptop there is no Nginx,
so the site, in debug mode only, answers /ear/<path> with a redirect to ear. ear must then allow
the site's origin (EAR_CORS_ORIGINS=http://localhost:8000), since the widget's calls land on
another port.

    from ear.dev_redirect import ear_dev_redirect
    ear_dev_redirect(app)                      # target: http://localhost:5001
"""
from __future__ import annotations

from flask import Blueprint, Flask, abort, current_app, redirect, request


def ear_dev_redirect(app: Flask, target: str = "http://localhost:5001", prefix: str = "/ear") -> None:
    bp = Blueprint("ear_dev_redirect", __name__)

    @bp.route(f"{prefix}/", defaults={"path": ""}, methods=["GET", "POST", "DELETE", "OPTIONS"])
    @bp.route(f"{prefix}/<path:path>", methods=["GET", "POST", "DELETE", "OPTIONS"])
    def to_ear(path: str):
        if not current_app.debug:
            abort(404)  # production: Nginx serves /ear/, the site never should
        query = request.query_string.decode()
        # 307 keeps the method and body: an upload POSTed to /ear/identify stays a POST.
        return redirect(f"{target.rstrip('/')}/{path}" + (f"?{query}" if query else ""), code=307)

    app.register_blueprint(bp)
