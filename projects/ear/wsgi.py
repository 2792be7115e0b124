"""WSGI entry point for Gunicorn: `ear.wsgi:app`."""
from .app import create_app

app = create_app()
