"""The answers this worker gave, remembered so that a listener's feedback is tied to one.

- `issue(track_ids, library)` remembers an answer's tracks (what it offered: matches,
  candidates) and the library it searched, and returns its query id, 128 random bits (`secrets.token_urlsafe`) that no client can guess.
- `claim(query_id, track_id)` accepts feedback on that answer once each: an id never issued
  or already forgotten is `unknown_query` (404); an answer that had its feedback is
  `feedback_already_given` (409); a track the answer did not offer is `track_not_in_answer`
  (400). The block under `claim` is given the answer's library, and the id is spent only
  when the block succeeds (the row is stored).
- Bounded: at most MAX_ANSWERS answers, each for at most ANSWER_TTL_S; the oldest go first.
- In memory only, in the one Gunicorn worker: a restart (an update, a crash) forgets every
  answer, and feedback on an answer given before it is refused as unknown.
"""
from __future__ import annotations

import secrets
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .errors import EarError, NotFound

# A listener says "right" or "wrong" within minutes of seeing the answer; an hour leaves room
# for a tab left open, and no more, so that ids do not outlive their use.
ANSWER_TTL_S = 3600.0
# Memory stays bounded whatever the traffic: 10,000 answers is ~3 a second for the whole hour,
# far over a personal site's load, at a few hundred bytes each (~1 KB with 100 candidates):
# at most ~10 MB.
MAX_ANSWERS = 10_000
_ID_BYTES = 16  # 128 random bits: unguessable; 22 characters in the JSON


class _Answer:
    __slots__ = ("issued_at", "track_ids", "library", "spent")

    def __init__(self, issued_at: float, track_ids: array, library: str):
        self.issued_at = issued_at
        self.track_ids = track_ids  # an array of int64: 8 bytes a track, not an object each
        self.library = library
        self.spent = False


class Answers:
    """The recent answers of this process, by query id (thread-safe: `ear serve` is threaded)."""

    def __init__(self, ttl_s: float = ANSWER_TTL_S, capacity: int = MAX_ANSWERS):
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._answers: OrderedDict[str, _Answer] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._answers)

    def issue(self, track_ids: Iterable[int], library: str) -> str:
        """A new query id for an answer from `library` that offered `track_ids`."""
        query_id = secrets.token_urlsafe(_ID_BYTES)
        now = time.monotonic()
        with self._lock:
            self._forget_expired(now)
            while len(self._answers) >= self._capacity:
                self._answers.popitem(last=False)
            self._answers[query_id] = _Answer(now, array("q", sorted(set(track_ids))), library)
        return query_id

    @contextmanager
    def claim(self, query_id: str, track_id: int | None) -> Iterator[str]:
        """Feedback on answer `query_id` (about `track_id`, if given): raises the error that
        refuses it, or runs the block, after which the answer has had its feedback."""
        with self._lock:
            self._forget_expired(time.monotonic())
            answer = self._answers.get(query_id)
            if answer is None:
                raise NotFound("unknown_query", "This query_id is not one of ear's recent answers "
                               f"(they are kept {self._ttl_s / 60:g} minutes): identify the clip again.")
            if answer.spent:
                raise EarError("feedback_already_given", "This answer has had its feedback already.", 409)
            if track_id is not None and track_id not in answer.track_ids:
                raise EarError("track_not_in_answer", "track_id is not a track this answer offered.")
            answer.spent = True
        try:
            yield answer.library
        except BaseException:
            answer.spent = False  # nothing was stored: the listener may send it again
            raise

    def _forget_expired(self, now: float) -> None:
        while self._answers:
            oldest = next(iter(self._answers.values()))
            if now - oldest.issued_at < self._ttl_s:
                return
            self._answers.popitem(last=False)
