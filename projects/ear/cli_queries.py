"""The `ear` commands that ask a library about recordings: identify, similar, hum. Each answers
every FILE in turn, as text or one JSON object per line; with `--log`, each query goes into the
query log as the service's do (its query id in the JSON)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .catalog import Catalog
from .cli_owner import chosen_library
from .config import Config
from .decode import decode_query
from .errors import EarError
from .explain import explain, explain_hum
from .heard import Timing, answered, hummed
from .hum import search
from .identify import identify
from .querylog import QueryLog
from .similar import Filters, similar_to_clip, similar_to_track


class _Asked:
    """Each FILE decoded, timed, and with `--log` its answer logged: `logged` gives the JSON's
    query id (or nothing)."""

    def __init__(self, config: Config, args, route: str, library: str) -> None:
        self.config, self.route, self.library = config, route, library
        self.log = QueryLog(config) if args.log else None

    def decode(self, file: str):
        self.timing = Timing()
        samples = decode_query(file, self.config)
        self.timing.decoded()
        return samples

    def logged(self, samples, offered, best) -> dict:
        if self.log is None:
            return {}
        query_id = self.log.record(self.timing.heard(self.route, self.library, samples, offered, best), samples)
        self.log.flush()
        return {"query_id": query_id}


def cmd_identify(config: Config, args) -> int:
    library = (catalog := Catalog(config)).library(chosen_library(catalog, args.library))
    asked = _Asked(config, args, "identify", library.name)

    def answer(file: str) -> dict:
        found = identify(library, samples := asked.decode(file), candidates=args.candidates)
        result = asked.logged(samples, (c.track.id for c in found.matches + found.candidates),
                              answered(found.matches[0] if found.matches else None))
        result["matches"] = [m.to_json() for m in found.matches]
        if args.candidates:
            result["candidates"] = [m.to_json() for m in found.candidates]
        best = found.matches[0] if found.matches else None
        if args.frames and best and (frame := catalog.frames.nearest(best.track.id, best.offset_s)):
            result["frame"] = str(_written(args.frames / (Path(file).stem + ".jpg"), frame.read_bytes()))
        if args.explain and best:
            picture = explain(library, samples, best).to_json()["svg"]
            result["explain"] = str(_written(args.explain / (Path(file).stem + ".svg"), picture.encode()))
        return result

    def describe(file: str, result: dict) -> None:
        if not result["matches"]:
            maybe = ", ".join(f"{c['track']['title']} (#{c['track']['id']}, {c['confidence']:.2f})"
                              for c in result.get("candidates", []))
            print(f"{file}: no match" + (f"; could it be: {maybe}" if maybe else ""))
            return
        best = result["matches"][0]
        t = best["track"]
        print(f"{file}: {t['artist'] or '-'} — {t['title']} (#{t['id']}) at "
              f"{best['offset_s']:.2f} s, confidence {best['confidence']:.2f}"
              + "".join(f"; {what}: {result[key]}" for key, what in (("frame", "its frame"), ("explain", "why"))
                        if key in result))

    _answer_each([(f, lambda f=f: answer(f)) for f in args.files], args.json, describe)
    return 0


def cmd_similar(config: Config, args) -> int:
    if bool(args.files) == (args.track is not None):
        print("ear similar: give FILE(s) or --track ID", file=sys.stderr)
        return 2
    library = (catalog := Catalog(config)).library(chosen_library(catalog, args.library))
    k = args.k or config.top_k
    filters = Filters(args.artist, args.genre, args.exclude_artist)
    asked = _Asked(config, args, "similar", library.name)

    def like_track() -> dict:
        return {"matches": [s.to_json() for s in similar_to_track(library, args.track, k, filters)]}

    def like_clip(file: str) -> dict:
        identified, found = similar_to_clip(library, samples := asked.decode(file), k, filters)
        offered = ([identified.track.id] if identified else []) + [s.track.id for s in found]
        return {**asked.logged(samples, offered, answered(identified)),
                "identified": identified.to_json() if identified else None,
                "matches": [s.to_json() for s in found]}

    def describe(label: str, result: dict) -> None:
        basis = result.get("identified")
        print(f"{label}: like {basis['track']['title']!r}" if basis else f"{label}:")
        for m in result["matches"]:
            t = m["track"]
            print(f"  {m['score']:.3f}  {t['artist'] or '-'} — {t['title']} (#{t['id']})")

    queries = ([(f"track:{args.track}", like_track)] if args.track is not None
               else [(f, lambda f=f: like_clip(f)) for f in args.files])
    _answer_each(queries, args.json, describe)
    return 0


def _written(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _answer_each(queries, as_json: bool, describe) -> None:
    """Answer each (label, compute) in turn; a failing query reports its error, the rest go on.
    With `as_json`, one object per line: {"query": label, ...compute()} or {"query", "error"}."""
    for label, compute in queries:
        result: dict = {"query": label}
        try:
            result.update(compute())
        except EarError as exc:
            result["error"] = exc.to_json()["error"]
        if as_json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{label}: error: {result['error']['message']}")
        else:
            describe(label, result)


def cmd_hum(config: Config, args) -> int:
    library = (catalog := Catalog(config)).library(chosen_library(catalog, args.library))
    asked = _Asked(config, args, "hum", library.name)

    def answer(file: str) -> dict:
        samples = asked.decode(file)
        found = [m for m in search(library.melodies, samples, k=max(1, args.k or config.top_k)) if m.is_match]
        rows = library.rows(m.track_id for m in found)
        found = [m for m in found if m.track_id in rows]
        result = {**asked.logged(samples, (m.track_id for m in found), hummed(found[0] if found else None)),
                  "matches": [m.to_json(rows[m.track_id]) for m in found]}
        if args.explain and found:
            picture = explain_hum(library, samples, found[0], rows[found[0].track_id].title).to_json()["svg"]
            result["explain"] = str(_written(args.explain / (Path(file).stem + ".svg"), picture.encode()))
        return result

    def describe(file: str, result: dict) -> None:
        if not result["matches"]:
            print(f"{file}: no match")
        if "explain" in result:
            print(f"{file}: why: {result['explain']}")
        for m in result["matches"]:
            t = m["track"]
            print(f"{file}: {m['score']:.3f}  {t['artist'] or '-'} — {t['title']} (#{t['id']}) "
                  f"{m['start_s']:.1f}–{m['end_s']:.1f} s")

    _answer_each([(f, lambda f=f: answer(f)) for f in args.files], args.json, describe)
    return 0
