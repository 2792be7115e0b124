"""The Flask application factory."""
from __future__ import annotations

import secrets
import threading

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .catalog import Catalog
from .config import Config, load_config
from .errors import EarError
from .querylog import QueryLog
from .ratelimit import RateLimiter
from .routes import admin, hum, identify, jobs, signin, similar, site, tracks
from .routes.helpers import EXTENSION, FEEDBACK_LIMIT, QUERIES, QUERY_LOG, log_failed_query
from .runtime import in_a_child, load_model_before_fork


def create_app(config: Config | None = None) -> Flask:
    """Build the app; the catalog and the model are loaded here (in Gunicorn's master, before
    the fork, so that the worker inherits them)."""
    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_mb * 1024 * 1024
    # The dashboard's sign-in cookie (routes/signin.py): signed, out of scripts' reach, never
    # sent by another site's page; named apart from the site's own Flask session beside ear.
    app.secret_key = config.secret_key or secrets.token_bytes(32)
    app.session_interface = signin.Cookie()
    app.config.update(SESSION_COOKIE_NAME="ear_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")
    catalog = app.extensions[EXTENSION] = Catalog(config)
    catalog.library(config.public_library)  # a name that cannot be one stops the start, not a visitor
    in_a_child(catalog.tidy)
    app.extensions[QUERY_LOG] = QueryLog(config)  # its writer starts in the worker, after the fork
    app.extensions[FEEDBACK_LIMIT] = RateLimiter(site.FEEDBACK_PER_MINUTE, site.FEEDBACK_BURST)
    app.extensions[admin.SIGNIN_LIMIT] = RateLimiter(admin.SIGNIN_PER_MINUTE, admin.SIGNIN_BURST)
    app.extensions[QUERIES] = threading.Lock()
    load_model_before_fork(config)
    # Behind Nginx at /ear/ the proxy says so in X-Forwarded-Prefix; the routes stay the same.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)
    for module in (identify, similar, hum, tracks, jobs, site, admin):
        app.register_blueprint(module.bp)
    allowed_origins = {o.strip().rstrip("/") for o in config.cors_origins.split(",") if o.strip()}
    app.after_request(lambda response: _cors(response, allowed_origins))
    app.register_error_handler(EarError, _ear_error)
    app.register_error_handler(HTTPException, lambda exc: _http_error(exc, config))
    app.register_error_handler(Exception, lambda exc: _internal_error(app, exc))
    return app


def _cors(response: Response, allowed_origins: set[str]) -> Response:
    # Only for the origins the owner lists (the site's dev server); off by default.
    origin = request.headers.get("Origin", "")
    if origin in allowed_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
    return response


def _ear_error(exc: EarError):
    log_failed_query(exc)
    return jsonify(exc.to_json()), exc.status, exc.headers()


def _http_error(exc: HTTPException, config: Config):
    code = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    if exc.code == 413:
        code = "upload_too_large"
        message = f"The upload is larger than the {config.max_upload_mb} MB allowed."
        length = request.content_length
        if length is not None and length <= config.max_upload_mb * 1024 * 1024:  # not the body
            message = (f"The form is over its limits: at most {request.max_form_memory_size // 1000} kB "
                       f"a field and {request.max_form_parts} fields; send audio as a file "
                       "(multipart field 'audio') or as the body.")
    return jsonify({"error": {"code": code, "message": message}}), exc.code


def _internal_error(app: Flask, exc: Exception):
    app.logger.exception("unhandled error")
    return jsonify({"error": {"code": "internal", "message": "Something went wrong in ear."}}), 500
