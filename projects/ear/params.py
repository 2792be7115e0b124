"""Numbers a user gives, by CLI flag or query string, checked one way."""
from __future__ import annotations

import argparse

MAX_COUNT = 100  # results asked for at once (k, candidates): beyond it an answer is a dump


def parse_count(raw: str, lowest: int = 0) -> int:
    """`raw` as a whole number from `lowest` to MAX_COUNT; ValueError saying what is wrong."""
    try:
        n = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if not lowest <= n <= MAX_COUNT:
        raise ValueError(f"must be between {lowest} and {MAX_COUNT}")
    return n


def count_argument(raw: str) -> int:
    """`parse_count` as an argparse type (--candidates N as `?candidates=` over HTTP)."""
    try:
        return parse_count(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
