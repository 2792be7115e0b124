"""Gunicorn settings for ear: `gunicorn -c deploy/gunicorn.conf.py` is all it takes.

One worker (memory is the scarce resource on a small VPS), the app preloaded in the master so
the catalog is opened once before the fork, and a timeout long enough for a large upload's ingest.
"""
import os
from pathlib import Path

wsgi_app = "ear.wsgi:app"
workers = 1
worker_class = "sync"
preload_app = True
timeout = 120
graceful_timeout = 30
bind = os.environ.get("EAR_BIND", "127.0.0.1:" + os.environ.get("EAR_PORT", "5001"))
# The control socket (Gunicorn ≥ 23) lives with the data, never in a shared or unwritable place.
_data_dir = Path(os.environ.get("EAR_DATA_DIR", "data")).resolve()
_data_dir.mkdir(parents=True, exist_ok=True)
control_socket = str(_data_dir / "gunicorn.ctl")
accesslog = "-"
errorlog = "-"
