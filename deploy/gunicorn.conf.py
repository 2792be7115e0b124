"""Gunicorn settings for ear: `gunicorn -c deploy/gunicorn.conf.py` is all it takes.

One worker (memory is the scarce resource on a small VPS), the app preloaded in the master so
the catalog is opened once before the fork (the database connection is closed before it, and
the fingerprint files are read-only maps, safe to share), and a timeout long enough for an
upload's ingest. Port and data directory come from ear's own configuration (EAR_* / .env).
"""
from ear.config import load_config

_config = load_config()

wsgi_app = "ear.wsgi:app"
workers = 1
worker_class = "sync"
preload_app = True
timeout = 120
graceful_timeout = 30
bind = f"127.0.0.1:{_config.port}"
# The control socket (Gunicorn ≥ 23) lives with the data, never in a shared or unwritable place.
_config.data_dir.mkdir(parents=True, exist_ok=True)
control_socket = str(_config.data_dir.resolve() / "gunicorn.ctl")
accesslog = "-"
errorlog = "-"
