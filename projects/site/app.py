"""A minimal personal site with the ear widget embedded, to try ear locally:

    EAR_CORS_ORIGINS=http://localhost:8000 ear serve          # ear on :5001
    flask --app projects/site/app.py run --debug --port 8000  # the site on :8000

In debug the site redirects /ear/... to ear on :5001; in production Nginx serves /ear/.
"""
from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, render_template

from ear.dev_redirect import ear_dev_redirect


def create_app() -> Flask:
    app = Flask(__name__, root_path=str(Path(__file__).parent))
    ear_dev_redirect(app, target=os.environ.get("EAR_DEV_URL", "http://localhost:5001"))

    @app.get("/")
    def home():
        return render_template("index.html")

    @app.get("/beats")
    def beats():
        return render_template("beats.html")

    return app


app = create_app()

if __name__ == "__main__":
    app.run(port=8000, debug=True)
