"""The Flask application factory."""
from __future__ import annotations

import torch
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .catalog import Catalog
from .config import Config, load_config
from .errors import EarError


def create_app(config: Config | None = None) -> Flask:
    """Build the app; the catalog is opened here (in Gunicorn's master, before the fork)."""
    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_mb * 1024 * 1024
    catalog = Catalog(config)
    # Load torch and the weights now, before Gunicorn forks, on one thread: a thread pool
    # started here would deadlock the forked worker. The worker sets its own limits.
    torch.set_num_threads(1)
    catalog.model  # noqa: B018
    app.extensions["ear"] = catalog
    # Behind Nginx at /ear/ the proxy says so in X-Forwarded-Prefix; the routes stay the same.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)

    from .api import bp
    from .web import bp as web_bp
    app.register_blueprint(bp)
    app.register_blueprint(web_bp)

    allowed_origins = {o.strip().rstrip("/") for o in config.cors_origins.split(",") if o.strip()}

    @app.after_request
    def cors(response):
        # Only for the origins the owner lists (the site's dev server); off by default.
        origin = request.headers.get("Origin", "")
        if origin in allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
            response.vary.add("Origin")
        return response

    @app.errorhandler(EarError)
    def ear_error(exc: EarError):
        return jsonify(exc.to_json()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            code = "upload_too_large"
            message = f"The upload is larger than the {config.max_upload_mb} MB allowed."
        return jsonify({"error": {"code": code, "message": message}}), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error")
        return jsonify({"error": {"code": "internal", "message": "Something went wrong in ear."}}), 500

    return app
