"""Users: the people the owner lets in, each with a key that opens their own library.

- `add(name)` makes a user and returns their key, shown this once: 32 random bytes
  (`secrets.token_urlsafe`) after the prefix `ear_`. Only its SHA-256 is stored: a key that
  random needs no slow hash, as no one can guess it, and a database that leaks gives no key.
- `find(key)` is the user a key belongs to, unless revoked; a lookup by the key's hash, so it
  takes the same time whichever user, if any, holds the key.
- `revoke(name)` closes a key for good (a new key means a new user name);
  the user's tracks stay in their library until the owner removes them.
"""
from __future__ import annotations

import hashlib
import secrets

from .db import User, database, now, write_transaction
from .errors import EarError, NotFound
from .libraries import OWNER, check_name

KEY_PREFIX = "ear_"
_KEY_BYTES = 32
_KEY_MAX_CHARS = 100  # ear's own are 47: anything much longer is no key of ours


def key_hash(key: str) -> str:
    """What ear keeps of a key (and a signed-in dashboard session holds): its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def add(name: str) -> tuple[User, str]:
    """(the new user, their key)."""
    check_name(name)
    if name == OWNER:
        raise EarError("bad_name", f"{OWNER!r} is the site owner's library, whose key is "
                       "EAR_ADMIN_TOKEN: choose another name.")
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    with database.connection_context(), write_transaction():
        if User.select().where(User.name == name).exists():
            raise EarError("user_exists", f"There is a user {name!r} already.", 409)
        return User.create(name=name, key_hash=key_hash(key)), key


def all_users() -> list[User]:
    with database.connection_context():
        return list(User.select().order_by(User.name))


def revoke(name: str) -> User:
    with database.connection_context(), write_transaction():
        user = User.get_or_none(User.name == name)
        if user is None:
            raise NotFound("user_not_found", f"No user {name!r}.")
        if user.revoked_at is None:
            user.revoked_at = now()
            user.save(only=[User.revoked_at])
        return user


def exists(name: str) -> bool:
    """Is `name` a user's (revoked or not: their library is still there)?"""
    with database.connection_context():
        return User.select().where(User.name == name).exists()


def by_name(name: str) -> User | None:
    """The user of that name, revoked or not."""
    with database.connection_context():
        return User.get_or_none(User.name == name)


def find(key: str) -> User | None:
    """The user whose key this is, unless it was revoked; None for any other string."""
    if not key.startswith(KEY_PREFIX) or len(key) > _KEY_MAX_CHARS:
        return None
    with database.connection_context():
        return find_by_hash(key_hash(key))


def find_by_hash(hashed: str) -> User | None:
    """The user whose key has this hash, unless it was revoked."""
    with database.connection_context():
        return User.get_or_none((User.key_hash == hashed) & User.revoked_at.is_null())
