"""What the routes share: the catalog, the query log and the feedback limit (one each per
app), who the caller is and which library they reach, the request's audio and parameters, and
the JSON of tracks and matches with their links (all made by `link`).

Who calls (`caller`), from the request's `Authorization: Bearer ...`:
- no key (no Authorization, or another scheme's: Nginx's auth_basic in front): a visitor (the
  site's widget); searches the public library (EAR_PUBLIC_LIBRARY), reads its tracks, changes
  nothing.
- a user's key (users.py): searches, reads, adds to and removes from their own library only.
- the owner's token (EAR_ADMIN_TOKEN): every library's tracks and jobs; searches and adds to the
  owner's library, or to the one `?library=NAME` names (which then scopes everything).
- any other Authorization (a wrong, revoked or malformed key): 401 `unauthorized`, never a
  visitor's answer, so that a mistyped key is not mistaken for an empty library.
- no key, but signed in to the dashboard (signin.py): that user, or the owner, on the
  dashboard's pages and on the calls its scripts make with the page's form token.
"""
from __future__ import annotations

import hmac
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import BinaryIO, Iterable, Iterator

import numpy as np
from flask import current_app, g, request

from .. import users
from ..catalog import Catalog
from ..cover import cover_type
from ..db import Job, Track
from ..decode import decode_query
from ..errors import EarError, NotFound
from ..identify import Candidate
from ..libraries import OWNER, Library
from ..heard import Answered, Timing
from ..params import parse_count
from ..querylog import QueryLog
from ..ratelimit import RateLimiter
from ..similar import Filters, Similar
from . import signin

_READ_BYTES = 1 << 20  # of an upload at a time (its end is where the size limit is checked)
EXTENSION = "ear"  # app.extensions[EXTENSION] is the catalog
QUERY_LOG = "ear.query_log"  # app.extensions[QUERY_LOG]: what was asked and answered, for feedback
FEEDBACK_LIMIT = "ear.feedback_limit"  # app.extensions[FEEDBACK_LIMIT]: feedback's rate limiter
QUERIES = "ear.queries"  # app.extensions[QUERIES]: the lock a query holds (one_query_at_a_time)


def catalog() -> Catalog:
    return current_app.extensions[EXTENSION]


def query_log() -> QueryLog:
    return current_app.extensions[QUERY_LOG]


def feedback_limit() -> RateLimiter:
    return current_app.extensions[FEEDBACK_LIMIT]


def uploaded_files() -> list[tuple[BinaryIO, str]]:
    """The audio of a request as streams, with their file names: each multipart field `audio`,
    or else the raw body. Read to its end, a body over the size limit raises 413, however it
    was sent (a chunked body without Content-Length too): it is never cut short at the limit."""
    if request.mimetype == "multipart/form-data":
        uploads = request.files.getlist("audio")
        if not uploads:
            raise EarError("missing_audio", "Send the audio in the multipart field 'audio'.")
        return [(upload.stream, upload.filename or "upload") for upload in uploads]
    # Any other content type (curl --data-binary sends a form type) is the audio itself.
    return [(request.stream, "upload")]


def upload_fields() -> dict[str, str]:
    """The form fields sent with the audio: a multipart form's; a raw body has none (its bytes
    are the audio, whatever type the client called them: curl --data-binary says it is a form)."""
    return request.form.to_dict() if request.mimetype == "multipart/form-data" else {}


def uploaded_audio() -> bytes:
    """The first of `uploaded_files`, read whole (a query: what FFmpeg decodes of it is capped
    anyway)."""
    [(stream, _), *_] = uploaded_files()
    return b"".join(iter(lambda: stream.read(_READ_BYTES), b""))


@contextmanager
def one_query_at_a_time() -> Iterator[None]:
    """Decode and match one clip at a time in this process. Gunicorn's worker has a second
    thread so that quick requests (a job's state, a track) need not wait behind a query; two
    queries at once would only share the cores and double the memory peak."""
    with current_app.extensions[QUERIES]:
        yield


def query_samples() -> np.ndarray:
    """The request's audio, decoded with a query's limits (and timed, for `log_query`)."""
    caller()  # who asks, known before the audio is read: a wrong key is refused first
    audio = uploaded_audio()
    g.ear_timing = timing = Timing()
    g.ear_samples = samples = decode_query(audio, catalog().config)
    timing.decoded()
    return samples


def log_query(offered: Iterable[int], best: Answered | None) -> str | None:
    """Log the query whose clip `query_samples` decoded, answered now (its route is the
    blueprint's name: identify, similar, hum): its query id. A prefix of a recording still going
    on (`partial_arg`) is logged only when it matched, since the widget may show that answer
    and take feedback on it; its audio is never kept (the recording it is part of goes on)."""
    if partial_arg() and best is None:
        return None
    heard = g.ear_timing.heard(request.blueprint, caller().searches, g.ear_samples, offered, best)
    return query_log().record(heard, None if partial_arg() else g.ear_samples)


def log_failed_query(error: EarError) -> None:
    """Log a query whose audio was read but that ended in an error (unreadable audio, no
    melody): no answer, its code. Errors before that (a bad parameter, a key) are no query."""
    timing, who = g.get("ear_timing"), g.get("ear_caller")
    if timing is not None and who is not None and not partial_arg():
        samples = g.get("ear_samples", np.zeros(0, np.float32))
        query_log().record(timing.heard(request.blueprint, who.searches, samples, (), None, error.code))


def count_arg(name: str, default: int, lowest: int = 0) -> int:
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        return parse_count(raw, lowest)
    except ValueError as exc:
        raise EarError("bad_parameter", f"{name} {exc}.") from None


def partial_arg() -> bool:
    """?partial=1: the upload is what the widget heard so far of a recording still going on."""
    return request.args.get("partial", "") in ("1", "true")


def explain_arg() -> bool:
    """?explain=1: the answer lays open what its best match rested on (explain.py)."""
    return request.args.get("explain", "") in ("1", "true")


def k_arg() -> int:
    return count_arg("k", default=catalog().config.top_k, lowest=1)


def filters_arg() -> Filters:
    return Filters(**{name: request.args.get(name, "").strip()
                      for name in ("artist", "genre", "exclude_artist")})


@dataclass(frozen=True)
class Caller:
    searches: str  # the library its queries search and its uploads go to
    sees: str | None  # the library whose tracks and jobs it may read and remove; None: all
    admin: bool = False
    keyed: bool = False  # a key came (the admin's or a user's): it may add and remove


def caller() -> Caller:
    """Who sent this request (see the module's docstring); read once per request."""
    if "ear_caller" not in g:
        g.ear_caller = _caller()
    return g.ear_caller


def _caller() -> Caller:
    config = catalog().config
    given = request.headers.get("Authorization", "")
    scheme, _, key = given.partition(" ")
    if scheme.lower() != "bearer" and not given.startswith(users.KEY_PREFIX):
        # No key at all, or another scheme's credentials (Nginx's auth_basic in front): a visitor.
        return _signed_in() or Caller(config.public_library, config.public_library)
    if is_admin():
        return _admin()
    user = users.find(key.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        _refuse_if_no_keys()
        raise EarError("unauthorized", "This key is wrong, revoked or malformed: send "
                       "'Authorization: Bearer <your key>'.", 401)
    return Caller(user.name, user.name, keyed=True)


def _admin() -> Caller:
    named = request.args.get("library", "").strip()
    if named and named != OWNER and not users.exists(named):
        raise NotFound("library_not_found", f"No library {named!r}.")
    return Caller(named or OWNER, named or None, admin=True, keyed=True)


def _signed_in() -> Caller | None:
    who = signin.signed_in(catalog().config.admin_token)
    if who is None:
        return None
    admin, name = who
    return _admin() if admin else Caller(name, name, keyed=True)


def _refuse_if_no_keys() -> None:
    # A site with neither an admin token nor users says how to allow changes.
    if not catalog().config.admin_token and not users.all_users():
        raise EarError("admin_disabled", "Set EAR_ADMIN_TOKEN (or add users with `ear users add`) "
                       "to allow changes over HTTP.", 403)


def is_admin() -> bool:
    """Does the request carry the admin token (and is there one)?"""
    token = catalog().config.admin_token
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def key_required(view):
    """For changes: the admin's token or a user's key."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not caller().keyed:
            _refuse_if_no_keys()
            raise EarError("unauthorized", "A key is needed: 'Authorization: Bearer <your key>'.", 401)
        return view(*args, **kwargs)
    return wrapper


def library() -> Library:
    """The library the caller searches."""
    return catalog().library(caller().searches)


def visible_track(track_id: int) -> Track:
    """Track `track_id` if the caller may see it; else `track_not_found`, as for an id that no
    library holds."""
    sees = caller().sees
    return catalog().get(track_id) if sees is None else catalog().library(sees).get(track_id)


def link(endpoint: str, **values: object) -> str:
    """The link to a route, however ear makes one: EAR_PUBLIC_URL and the route's path, or
    without it the path from the root the request came through (`/ear/...` behind Nginx, which
    sets X-Forwarded-Prefix). Never the request's Host: a client chooses it, and a link built
    from it could send the next reader anywhere."""
    path = current_app.url_map.bind("", script_name="/").build(endpoint, values)
    return (catalog().config.public_url.rstrip("/") or request.script_root) + path


# A track's source is a server path when the owner ingested a file: only the admin sees it whole;
# everyone else gets its file name.
def track_json(track: Track) -> dict:
    return {**track.to_json(path=caller().admin), "url": link("tracks.get_track", track_id=track.id)}


def jobs_json(jobs: list[Job]) -> list[dict]:
    """Jobs with their links, and the tracks they made or found they duplicate (if still
    there), looked up at once."""
    tracks = catalog().rows(job.track_id for job in jobs if job.track_id)
    return [{**job.to_json(), "url": link("jobs.get_job", job_id=job.id),
             **({"track": track_json(tracks[job.track_id])} if job.track_id in tracks else {})}
            for job in jobs]


def candidate_json(candidate: Candidate) -> dict:
    """A match or candidate as JSON, its track carrying the links the widget uses."""
    return with_media(candidate.to_json(path=caller().admin), candidate.track)


def with_media(answer: dict, track: Track) -> dict:
    """An answer's JSON (a match of any kind), its track carrying the links the widget uses, and
    `frame_url` for a video track's picture of the matched moment."""
    at = answer.get("offset_s", answer.get("start_s"))
    frame = ({"frame_url": link("tracks.track_frame", track_id=track.id, t=round(at, 1))}
             if at is not None and catalog().frames.has(track.id) else {})
    return {**answer, **frame, "track": {**answer["track"], **media_links(track)}}


def similar_json(similar: Similar) -> dict:
    return similar.to_json(path=caller().admin)


def media_links(track: Track) -> dict[str, str]:
    """`audio_url` when the owner allows playback and the file is there; `cover_url` when the
    file has a cover image."""
    links = {}
    path = catalog().audio_path(track)
    if path is None:
        return links
    if catalog().config.allow_playback:
        links["audio_url"] = link("tracks.track_audio", track_id=track.id)
    if cover_type(path):
        links["cover_url"] = link("tracks.track_cover", track_id=track.id)
    return links

