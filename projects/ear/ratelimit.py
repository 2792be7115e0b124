"""A per-address request limit: a token bucket for each client address, in this process's memory.

- `take(address)` spends one token of that address's bucket (it holds `burst` tokens and
  refills at `per_minute`); an empty bucket raises `RateLimited` (429), which says in whole
  seconds when the next token is there.
- Bounded: a bucket that has had time to fill up again is forgotten (such an address is no
  different from one never seen), and at most MAX_ADDRESSES are kept; past that the longest
  idle go first, with a full bucket when they come back.
- In memory only, in the one Gunicorn worker: a restart gives every address a full bucket.
  Behind Nginx, its `limit_req` (nginx/ear-limits.conf) stops a flood before it reaches ear.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from .errors import RateLimited

# Memory stays bounded whatever the traffic (~150 bytes an address: ~1.5 MB). 10,000 distinct
# clients within the half minute a bucket takes to refill is far beyond a personal site's load;
# one client spread over more addresses than that is past what a per-address limit can stop.
MAX_ADDRESSES = 10_000


class RateLimiter:
    """Token buckets by client address (thread-safe: `ear serve` is threaded)."""

    def __init__(self, per_minute: float, burst: int, capacity: int = MAX_ADDRESSES):
        self._rate_per_s = per_minute / 60
        self._burst = burst
        self._capacity = capacity
        # address → (tokens, when counted); least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: str) -> None:
        """One request from `address`, or `RateLimited` if its bucket is empty."""
        now = time.monotonic()
        with self._lock:
            self._forget_idle(now)
            tokens, counted = self._buckets.pop(address, (self._burst, now))
            tokens = min(self._burst, tokens + (now - counted) * self._rate_per_s)
            allowed = tokens >= 1
            self._buckets[address] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self._capacity:
                self._buckets.popitem(last=False)
        if not allowed:
            wait_s = math.ceil((1 - tokens) / self._rate_per_s)
            raise RateLimited(f"Too many requests from your address: try again in {wait_s} s.", wait_s)

    def _forget_idle(self, now: float) -> None:
        refill_s = self._burst / self._rate_per_s  # even an empty bucket is full after this
        while self._buckets:
            _, counted = next(iter(self._buckets.values()))
            if now - counted < refill_s:
                return  # the rest were seen later still
            self._buckets.popitem(last=False)
