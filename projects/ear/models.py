"""The embedding model's versions: the one shipped in the package, and those `ear train
--from-catalog` made from the owner's music, each with its figures, one of them serving.

A trained version is a folder `models/vN/` in the data directory holding its weights
(`ear-embed.pt`) and `figures.json` (what `ear eval` measured on a held-out part of the
owner's catalog, for it and for the model it was trained from). `models/serving.json` names the
version new vectors are made with. Vectors from two models cannot be compared, so each
library's embedding index records the version that made its vectors, and a query to a library
is embedded with that version (`for_index`): when the serving version changes, a `reembed` job
per library makes the vectors again, and each library's queries follow its index at the moment
its new vectors are swapped in. Until then they go on with the old version.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .embed import MODEL_PATH, SHIPPED, Model
from .errors import EarError, NotFound
from .storage import commit, read_json, write_json

log = logging.getLogger(__name__)

WEIGHTS = "ear-embed.pt"
FIGURES = "figures.json"
# Models a process keeps loaded (5 MB each): the serving one, and while libraries are being
# re-embedded, the one their old vectors came from.
KEPT_LOADED = 2
# What `ear train --from-catalog` measures of a version on the held-out part of the catalog;
# a version serves only if it beats the one it came from on identification and on similarity.
FIGURE_LABELS = {"top5_hard": "top-5 HARD %", "top5_ultra": "top-5 ULTRA %",
                 "p10_artist": "same artist p@10 %", "p10_genre": "same genre p@10 %"}
_TRAINED = re.compile(r"v([1-9][0-9]{0,5})")


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    created: str  # ISO time, "" for the shipped model
    figures: dict  # as figures.json holds them; {} when none were measured
    serving: bool


def folder(config: Config) -> Path:
    return config.data_dir / "models"


def path_of(config: Config, name: str) -> Path:
    """The weights of version `name`; NotFound if there is no such version."""
    if name == SHIPPED:
        return MODEL_PATH
    path = folder(config) / name / WEIGHTS
    if not _TRAINED.fullmatch(name) or not path.is_file():
        raise NotFound("model_not_found", f"No model version {name!r}: `ear models` lists them.")
    return path


def serving(config: Config) -> str:
    """The version new vectors are made with: the shipped one if the version chosen is gone
    (its folder deleted by hand), so that ear still starts and follows it."""
    name = str((read_json(folder(config) / "serving.json") or {}).get("version", SHIPPED))
    if name != SHIPPED and not (folder(config) / name / WEIGHTS).is_file():
        log.warning("the serving model %s is gone from %s: the shipped one serves", name, folder(config))
        return SHIPPED
    return name


def set_serving(config: Config, name: str) -> None:
    """Make `name` the serving version (the caller queues the libraries' re-embedding)."""
    path_of(config, name)
    folder(config).mkdir(parents=True, exist_ok=True)
    write_json(folder(config) / "serving.json", {"version": name})


def versions(config: Config) -> list[Version]:
    """Every version, the shipped one first, then the trained ones oldest first."""
    current = serving(config)
    found = [Version(SHIPPED, MODEL_PATH, "", {}, current == SHIPPED)]
    for _, path in sorted(_numbered(config)):
        if not (path / WEIGHTS).is_file():  # not whole yet (add_version)
            continue
        figures = read_json(path / FIGURES) or {}
        found.append(Version(path.name, path / WEIGHTS, str(figures.get("created", "")),
                             figures, current == path.name))
    return found


def next_name(config: Config) -> str:
    """The name the next trained version will have."""
    return f"v{max((number for number, _ in _numbered(config)), default=0) + 1}"


def _numbered(config: Config) -> list[tuple[int, Path]]:
    """(N, folder) of every `vN` folder."""
    found = folder(config).glob("v*") if folder(config).is_dir() else []
    return [(int(m.group(1)), p) for p in found if (m := _TRAINED.fullmatch(p.name))]


def add_version(config: Config, name: str, weights: Path, figures: dict) -> None:
    """Keep `weights` (moved) as version `name` with its figures; it is listed, and can serve,
    only once whole (the weights go in last)."""
    path = folder(config) / name
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / FIGURES, {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                **figures})
    commit(weights, path / WEIGHTS)


_loaded: OrderedDict[tuple[Path, int], Model] = OrderedDict()  # by file and its change time
_loading = threading.Lock()


def load(config: Config, name: str) -> Model:
    """Version `name`, loaded once per process (the last KEPT_LOADED used are kept)."""
    return _load(path_of(config, name), name)


def shipped_model() -> Model:
    """The package's model (what a data directory without trained versions serves)."""
    return _load(MODEL_PATH, SHIPPED)


def _load(path: Path, name: str) -> Model:
    with _loading:
        try:
            key = (path, path.stat().st_mtime_ns)
            if key not in _loaded:
                _loaded[key] = Model(path, name)
        except (OSError, RuntimeError, KeyError) as exc:
            raise EarError("model_unreadable", f"The model {name} cannot be read: {exc}") from exc
        while len(_loaded) > KEPT_LOADED:
            _loaded.popitem(last=False)
        _loaded.move_to_end(key)
        return _loaded[key]


def serving_model(config: Config) -> Model:
    return load(config, serving(config))


def for_index(config: Config, name: str) -> Model:
    """Version `name`, which an index's vectors were made by: 503 `model_missing` if it is gone."""
    try:
        return load(config, name)
    except NotFound as exc:  # its folder was deleted by hand: the index cannot be searched
        raise EarError("model_missing", f"{exc.message} An index holds its vectors: `ear models use "
                       "shipped` (and the worker) embeds them again.", 503) from exc
