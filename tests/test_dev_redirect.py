"""The example site's dev redirect: /ear/... goes to ear on :5001 in debug, and nowhere otherwise."""
from __future__ import annotations

import importlib.util

from helpers import REPO


def _site():
    spec = importlib.util.spec_from_file_location("site_app", REPO / "projects/site/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app()


def test_debug_site_redirects_ear_to_port_5001():
    app = _site()
    app.debug = True
    client = app.test_client()
    r = client.get("/ear/health")
    assert r.status_code == 307 and r.headers["Location"] == "http://localhost:5001/health"
    r = client.post("/ear/similar?k=3", data=b"audio")
    assert r.status_code == 307 and r.headers["Location"] == "http://localhost:5001/similar?k=3"
    assert client.get("/").status_code == 200 and b'src="/ear/widget.js"' in client.get("/").data


def test_production_site_does_not_redirect():
    app = _site()
    app.debug = False
    assert app.test_client().get("/ear/health").status_code == 404
