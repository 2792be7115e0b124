"""Errors that a user can act on: a code, a message and the HTTP status that goes with them."""
from __future__ import annotations


class EarError(Exception):
    status = 400

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadAudio(EarError):
    """The input could not be turned into usable audio (status 400, or 413/422 by kind)."""


class NotFound(EarError):
    status = 404
