"""All of ear's settings, in one place: environment and `.env` over typed defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from dotenv import load_dotenv


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    admin_token: str = ""  # empty: admin routes are refused, never open
    max_upload_mb: int = 50
    max_query_seconds: float = 30.0
    max_track_seconds: float = 3 * 3600.0
    decode_timeout_s: float = 60.0  # per query; tracks get a longer limit scaled by their length cap
    port: int = 5001
    match_threshold: float = 7.5  # verification z-score below which the answer is "no match"
    top_k: int = 5
    torch_threads: int = 1  # the VPS's cores are shared with the web site
    torch_interop_threads: int = 1
    allow_playback: bool = False  # serve catalog audio to the widget's play button
    cors_origins: str = ""  # comma-separated origins allowed to call ear from a browser (dev)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ear.sqlite3"

    @property
    def fingerprint_dir(self) -> Path:
        return self.data_dir / "fingerprints"

    @property
    def embedding_dir(self) -> Path:
        return self.data_dir / "embeddings"


_ENV_NAMES = {f.name: "EAR_" + f.name.upper() for f in fields(Config)}


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
        raw = os.environ.get(_ENV_NAMES[f.name])
        if raw is None or raw == "":
            continue
        kind = type(getattr(Config, f.name))
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise SystemExit(f"{_ENV_NAMES[f.name]}={raw!r}: not a valid {kind.__name__}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    return replace(Config(), **values)
