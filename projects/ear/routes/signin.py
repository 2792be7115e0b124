"""Signing in to the dashboard: Flask's session, a cookie signed with EAR_SECRET_KEY (HttpOnly,
SameSite=Strict: app.py), holding who signed in, the hash of the key they used, and the form
token that every form and script call of the dashboard sends back.

A signed-in browser is that caller (routes/helpers.py) on the dashboard's own pages, and on the
calls its scripts make with the form token in X-Ear-Session; never on the widget's calls, which
carry no token, and no longer once the user's key is revoked or the admin token changed (the
hash kept no longer matches).
"""
from __future__ import annotations

import hmac
import secrets

from flask import request, session

from .. import users

ADMIN = "admin"  # session["who"] of the owner; a user's is their name, which is never this one
HEADER = "X-Ear-Session"  # where the dashboard's scripts send the form token
_TOKEN_BYTES = 16


def sign_in(key: str, admin_token: str) -> bool:
    """Sign the browser in with the admin token or a user's key (a new session, a new form
    token); False if the key is neither."""
    owner = bool(admin_token) and hmac.compare_digest(key.encode(), admin_token.encode())
    user = None if owner else users.find(key)
    if not owner and user is None:
        return False
    session.clear()
    session.update(who=ADMIN if owner else user.name, check=users.key_hash(key),
                   form_token=secrets.token_urlsafe(_TOKEN_BYTES))
    return True


def sign_out() -> None:
    session.clear()


def form_token() -> str:
    """The session's form token (one is made for a browser not signed in yet: the sign-in form
    carries it too)."""
    return session.setdefault("form_token", secrets.token_urlsafe(_TOKEN_BYTES))


def form_token_sent(sent: str) -> bool:
    expected = session.get("form_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def signed_in(admin_token: str) -> str | None:
    """ADMIN, a user's name, or None: who this request comes from, by its session (see the
    module's docstring)."""
    if request.blueprint != "admin" and not form_token_sent(request.headers.get(HEADER, "")):
        return None
    check, who = session.get("check", ""), session.get("who")
    if who == ADMIN:
        return ADMIN if admin_token and hmac.compare_digest(check, users.key_hash(admin_token)) else None
    user = users.find_by_hash(check) if check else None
    return user.name if user and user.name == who else None
