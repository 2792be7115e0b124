"""All of ear's settings, in one place: environment and `.env` over typed defaults.

Each setting is declared once, with its help; `.env.example` is that list written out
(`python -m ear.config > .env.example`), and a test keeps the two the same.
"""
from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path

from dotenv import load_dotenv


def _setting(default, help: str) -> Field:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    data_dir: Path = _setting(
        Path("data"), "Where the catalog lives: SQLite database, fingerprint files, embedding "
                      "indexes and the originals of uploads.")
    database_url: str = _setting(
        "", "The catalog database (tracks, jobs, feedback). Empty: SQLite in the data directory. "
            "postgresql://USER:PASSWORD@HOST/NAME: a PostgreSQL server (pip install "
            "'ear[postgresql]'). The fingerprints, indexes and originals stay in the data "
            "directory: the database is the catalog of that one folder (docs/scaling.md).")
    admin_token: str = _setting(
        "", "The owner's Bearer token: full access over HTTP to every library (uploads, removals, "
            "jobs). Empty: the owner's changes over HTTP are refused, never open.")
    secret_key: str = _setting(
        "", "Signs the dashboard's sign-in cookie (/admin/); deploy/install.sh writes a random one. "
            "Empty: a random one at each start, so that a restart signs everyone out.")
    open_libraries: int = _setting(
        8, "Libraries a process keeps open (their maps and track tables); another is opened for "
           "the request that needs it, in a few ms. Memory grows ~0.4 MB per open library.")
    public_library: str = _setting(
        "owner", "The library that callers without a key search (the site's widget): the owner's, "
                 "or a user's name (`ear users add`).")
    max_upload_mb: int = _setting(50, "Largest upload accepted, in MB (HTTP 413 above it).")
    max_query_seconds: float = _setting(30.0, "Longest query accepted, in seconds (HTTP 413 above it).")
    max_track_seconds: float = _setting(3 * 3600.0, "Longest catalog track accepted, in seconds.")
    decode_timeout_s: float = _setting(
        60.0, "Wall-clock limit for decoding one query, in seconds (tracks get max_track_seconds "
              "/ 20 if longer).")
    frame_seconds: float = _setting(
        2.0, "A video track (mp4, webm, mkv, mov) keeps a small picture (320 px JPEG) of every "
             "this many seconds, for the frame of the matched moment (GET /tracks/<id>/frame). "
             "0: keep no pictures.")
    port: int = _setting(
        5001, "Port of `ear serve` and of Gunicorn (deploy/gunicorn.conf.py binds 127.0.0.1 on it).")
    match_threshold: float = _setting(
        7.5, "Verification z-score a match needs; below it ear answers \"no match\". Higher: fewer "
             "false positives, fewer matches on noisy clips (see `ear eval`).")
    top_k: int = _setting(5, "Matches returned at most.")
    torch_threads: int = _setting(
        1, "CPU threads torch may use for the embedding model. Keep 1 on a small VPS: the web site "
           "needs the other core.")
    torch_interop_threads: int = _setting(1, "torch's inter-op threads (as EAR_TORCH_THREADS).")
    worker_torch_threads: int = _setting(
        1, "CPU threads torch may use in `ear worker`, which adds uploaded tracks, and in the "
           "learning loop's training (the web worker's are EAR_TORCH_THREADS).")
    worker_nice: int = _setting(
        10, "How much `ear worker` and the learning loop's training step back for the site and "
            "its queries (nice, 0–19).")
    worker_linger_s: float = _setting(
        120.0, "Seconds `ear worker` keeps torch and the model loaded after its last job, for the "
               "next upload; then it hands their ~200 MB back to the machine, and loads them again "
               "(1–3 CPU s) when a job comes. 0: hand them back as soon as the queue is empty.")
    worker_name: str = _setting(
        "", "The name `ear worker` runs under, one per worker; empty: the host name. Give each "
            "its own when several work for one database.")
    allow_playback: bool = _setting(
        False, "Let the widget's play button stream catalog audio (GET /tracks/<id>/audio, with "
               "HTTP ranges).")
    cors_origins: str = _setting(
        "", "Browser origins allowed to call ear directly (CORS), comma-separated; for local "
            "development, e.g. http://localhost:8000 when the site redirects /ear/ to port 5001. "
            "Empty: none.")
    public_url: str = _setting(
        "", "Where the public reaches ear, e.g. https://example.org/ear: the links in its answers "
            "(url, audio_url, cover_url) start with it. Empty: links are paths from the root the "
            "request came through (/ear/... behind Nginx), never built from the Host header a "
            "client sends.")
    log_days: int = _setting(
        90, "Days the query log keeps a query (what was asked, what ear answered, how fast; never "
            "the audio): what `ear stats` and the feedback's precision are computed from.")
    log_rows: int = _setting(
        200_000, "Queries the log keeps at most, whatever the traffic (~300 bytes each); the "
                 "oldest go first.")
    keep_queries: bool = _setting(
        False, "Keep each query's audio (a visitor's recording: personal data) in queries/ of the "
               "data directory, for listening back and for training. Off: ear keeps none.")
    keep_queries_days: int = _setting(
        30, "Days a kept query's audio stays (EAR_KEEP_QUERIES); then it is deleted.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ear.sqlite3"

    @property
    def database(self) -> Path | str:
        """Where the catalog database is: the SQLite file, or the URL of another."""
        return self.database_url or self.db_path

    @property
    def fingerprint_dir(self) -> Path:
        return self.data_dir / "fingerprints"

    @property
    def embedding_dir(self) -> Path:
        return self.data_dir / "embeddings"

    @property
    def originals_dir(self) -> Path:
        return self.data_dir / "originals"

    @property
    def frames_dir(self) -> Path:
        return self.data_dir / "frames"

    @property
    def queries_dir(self) -> Path:
        return self.data_dir / "queries"


def env_name(name: str) -> str:
    return "EAR_" + name.upper()


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def load_config(env_file: str | os.PathLike | None = None, **overrides) -> Config:
    """Read `EAR_*` variables (a `.env` file fills in what the environment lacks)."""
    load_dotenv(env_file or Path.cwd() / ".env", override=False)
    values = {}
    for f in fields(Config):
        raw = os.environ.get(env_name(f.name))
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise SystemExit(f"{env_name(f.name)}={raw!r}: not a valid {kind.__name__}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    return replace(Config(), **values)


def env_example() -> str:
    """Every setting with its help and its default, as `.env.example` holds them."""
    lines = ["# ear reads EAR_* from the environment; this file (copied to .env) fills in what is not set.",
             "# Every value below is the built-in default. Written by `python -m ear.config`.", ""]
    for f in fields(Config):
        lines += textwrap.wrap(f.metadata["help"], 98, initial_indent="# ", subsequent_indent="# ")
        default = str(f.default).lower() if isinstance(f.default, bool) else f.default
        if isinstance(default, float) and default.is_integer():
            default = int(default)
        lines += [f"{env_name(f.name)}={default}", ""]
    return "\n".join(lines[:-1]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(env_example())
