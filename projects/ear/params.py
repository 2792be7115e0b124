"""Numbers a user gives, by CLI flag or query string, checked one way with one error."""
from __future__ import annotations

from .errors import EarError

MAX_COUNT = 100  # results asked for at once (k, candidates): beyond it an answer is a dump


def count(raw: str, name: str, default: int, lowest: int = 0) -> int:
    """`raw` as a whole number from `lowest` to MAX_COUNT (`default` when empty); else the
    error `bad_parameter`."""
    try:
        n = int(raw) if raw else default
    except ValueError:
        raise EarError("bad_parameter", f"{name} must be a whole number.") from None
    if not lowest <= n <= MAX_COUNT:
        raise EarError("bad_parameter", f"{name} must be between {lowest} and {MAX_COUNT}.")
    return n
