"""Signing in to the dashboard: Flask's session, a cookie signed with EAR_SECRET_KEY (`Cookie`:
HttpOnly, SameSite=Strict, Secure over HTTPS, only under ear's own path), holding who signed in
and when, a keyed hash of the key they used, and the form token that every form and script call
of the dashboard sends back.

A signed-in browser is that caller (routes/helpers.py) on the dashboard's own pages, and on the
calls its scripts make with the form token in X-Ear-Session; never on the widget's calls, which
carry no token. A session ends when its key is revoked or the admin token changes (the hash no
longer matches), and when its owner signs out: that ends every session of theirs, as the cookie
itself cannot be taken back (the time of the sign-out is kept in the database).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from .. import users
from ..db import Setting, database, write_transaction

HEADER = "X-Ear-Session"  # where the dashboard's scripts send the form token
_TOKEN_BYTES = 16  # 128 random bits, as the query ids: unguessable
_SIGNED_OUT = "signed_out:"  # + "admin" or ":" + a user's name: the Setting row of their last sign-out


class Cookie(SecureCookieSessionInterface):
    """The session cookie under the path ear is served from (`/ear/` behind Nginx: the site's
    other pages never receive it), and Secure whenever the request came over HTTPS."""

    def get_cookie_path(self, app) -> str:
        return (request.script_root or "") + "/"

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure


def sign_in(key: str, admin_token: str) -> bool:
    """Sign the browser in with the admin token or a user's key (a new session, a new form
    token); False if the key is neither."""
    owner = bool(admin_token) and hmac.compare_digest(key.encode(), admin_token.encode())
    user = None if owner else users.find(key)
    if not owner and user is None:
        return False
    session.clear()
    session.update(admin=owner, who="" if owner else user.name, at=time.time(),
                   check=_keyed(users.key_hash(key)), form_token=secrets.token_urlsafe(_TOKEN_BYTES))
    return True


def sign_out() -> None:
    """End this browser's session, and every other of the same person's."""
    if session.get("check"):
        with database.connection_context(), write_transaction():
            Setting.insert(key=_signed_out_key(), value=repr(time.time())).on_conflict(
                conflict_target=[Setting.key], update={Setting.value: repr(time.time())}).execute()
    session.clear()


def form_token() -> str:
    """The session's form token (one is made for a browser not signed in yet: the sign-in form
    carries it too)."""
    return session.setdefault("form_token", secrets.token_urlsafe(_TOKEN_BYTES))


def form_token_sent(sent: str) -> bool:
    expected = session.get("form_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def signed_in(admin_token: str) -> tuple[bool, str] | None:
    """(True, "") for the owner, (False, name) for a user, None for no one: who this request
    comes from, by its session (see the module's docstring)."""
    if request.blueprint != "admin" and not form_token_sent(request.headers.get(HEADER, "")):
        return None
    check, who = session.get("check", ""), session.get("who", "")
    if session.get("admin"):
        hashed = users.key_hash(admin_token) if admin_token else None
    else:
        user = users.by_name(who) if who else None
        hashed = user.key_hash if user and user.revoked_at is None else None
    if hashed is None or not hmac.compare_digest(check, _keyed(hashed)) or _signed_out_since(session.get("at", 0)):
        return None
    return (True, "") if session.get("admin") else (False, who)


def _keyed(key_hash: str) -> str:
    # Keyed with the secret: the cookie, though readable, gives nothing to guess a key against.
    return hmac.new(current_app.secret_key if isinstance(current_app.secret_key, bytes)
                    else current_app.secret_key.encode(), key_hash.encode(), hashlib.sha256).hexdigest()


def _signed_out_key() -> str:
    return _SIGNED_OUT + ("admin" if session.get("admin") else ":" + session.get("who", ""))


def _signed_out_since(signed_in_at: float) -> bool:
    with database.connection_context():
        row = Setting.get_or_none(Setting.key == _signed_out_key())
    return row is not None and float(row.value) >= signed_in_at
