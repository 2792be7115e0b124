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

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the error's answer."""
        return {}


class BadAudio(EarError):
    """The input could not be turned into usable audio (status 400, or 413/422 by kind)."""


class NotFound(EarError):
    status = 404


class RateLimited(EarError):
    """Too many requests from one client address: 429, with the seconds to wait (Retry-After)."""

    status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__("rate_limited", message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
