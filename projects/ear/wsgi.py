"""WSGI entry point for Gunicorn: `ear.wsgi:app`."""
import sys

from .app import create_app
from .errors import EarError

try:
    app = create_app()
except EarError as exc:  # a setting to fix: one line in the log, not a traceback
    sys.exit(f"ear: {exc.message}")
