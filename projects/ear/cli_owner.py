"""The owner's commands about who may use ear, how it is doing and where its data lives:
`ear users add | list | revoke`, `ear stats`, `ear models [use V]`, `ear copy-database`; and the
check of `--library` that every command shares."""
from __future__ import annotations

import json

from . import models, users
from .catalog import Catalog
from .config import Config
from .db_copy import copy_database
from .errors import NotFound
from .libraries import OWNER, check_name
from .reembed import follow
from .stats import Figures, figures

_BARS = " ▁▂▃▄▅▆▇█"  # a count as a bar one character wide, in eighths of the largest


def chosen_library(catalog: Catalog, name: str | None) -> str:
    """The library `--library` names (the owner's if none), once `catalog` has opened the
    database: a user's, who must exist."""
    if not name or name == OWNER:
        return OWNER
    if not users.exists(check_name(name)):
        raise NotFound("library_not_found", f"No library {name!r}: `ear users list` shows them.")
    return name


def cmd_users(config: Config, args) -> int:
    Catalog(config)  # the database, made or brought up to date
    if args.action == "add":
        user, key = users.add(args.name)
        print(f"user {user.name} added; their key (shown only now, ear keeps only its hash):\n{key}")
    elif args.action == "revoke":
        user = users.revoke(args.name)
        print(f"user {user.name}: key revoked; their tracks stay until removed "
              f"(`ear --library {user.name} tracks`)")
    else:
        for user in users.all_users():
            data = user.to_json()
            print(json.dumps(data) if args.json else
                  f"{user.name}\t{'revoked ' + data['revoked_at'] if user.revoked_at else 'active'}"
                  f"\tsince {data['created_at']}")
    return 0


def cmd_copy_database(config: Config, args) -> int:
    Catalog(config)  # the database, made or brought up to date, and paired with the folder
    copied = copy_database(config.database, args.url)
    print(", ".join(f"{n} {table}" for table, n in copied.items()) + " rows copied; now set "
          f"EAR_DATABASE_URL={args.url} in .env and restart ear and ear-worker")
    return 0


def cmd_models(config: Config, args) -> int:
    catalog = Catalog(config)
    if args.action == "use":
        behind = follow(catalog, args.version)
        print(f"model {args.version} makes new vectors; libraries to embed again (`ear worker` "
              f"does it, `ear jobs` shows it; each one's queries switch when it is done): "
              f"{', '.join(behind) or 'none'}")
        silent = sum(catalog.audio_path(t) is None for name in behind for t in catalog.library(name).tracks())
        if silent:
            print(f"{silent} of their tracks have no audio file left: they leave the embedding index "
                  "(their fingerprints still identify them; `ear ingest` their files again to bring them back)")
        return 0
    for version in models.versions(config):
        if args.json:
            print(json.dumps({"version": version.name, "serving": version.serving,
                              "created": version.created, "figures": version.figures}))
        else:
            print(("* " if version.serving else "  ") + _version_line(version))
    return 0


def _version_line(version: models.Version) -> str:
    """A version's name, date, and what it scored on its held-out clips beside the model it was
    trained from (in brackets)."""
    scored = version.figures.get("eval") or {}
    mine, base = scored.get("candidate", {}), scored.get("base", {})
    parts = [f"{version.name:8}", f"{version.created or 'in the package':25}"]
    if version.figures.get("trained_from"):
        parts.append(f"from {version.figures['trained_from']}")
    parts += [f"{label} {mine[key]:.1f} ({base.get(key, float('nan')):.1f})"
              for key, label in models.FIGURE_LABELS.items() if key in mine]
    return "  ".join(parts)


def cmd_stats(config: Config, args) -> int:
    catalog = Catalog(config)  # the database, made or brought up to date
    found = figures(args.days, args.library and chosen_library(catalog, args.library))
    print(json.dumps(found.to_json()) if args.json else "\n".join(_describe(found)))
    return 0


def _describe(found: Figures) -> list[str]:
    lines = [f"last {found.days} days, {'library ' + found.library if found.library else 'every library'}",
             f"{'route':10}{'queries':>9}{'answered':>10}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'clip s':>8}"]
    lines += [f"{r.route:10}{r.queries:>9}{r.answered_share:>10.1%}{r.errors:>8}{r.p50_ms:>9.0f}{r.p95_ms:>9.0f}"
              f"{r.mean_clip_s:>8.1f}" for r in found.routes] or ["(no queries)"]
    if found.per_day:
        lines.append(f"per day   {_bars([n for _, n, _ in found.per_day])}  {found.per_day[0][0]} .. "
                     f"{found.per_day[-1][0]}, at most {max(n for _, n, _ in found.per_day)}")
    lines.append(f"confidence {_bars(found.confidence_histogram)}  0 .. 1, in tenths")
    precision = "-" if found.precision is None else f"{found.precision:.1%}"
    lines.append(f"feedback: {found.right} right, {found.wrong} wrong (precision {precision}); "
                 f"{found.missed} said wrong of a no match")
    lines += [f"answered  #{track} {title}: {n}" for track, title, n in found.top_tracks]
    lines += [f"it was: {text}" for text in found.corrections]
    return lines


def _bars(counts: list[int]) -> str:
    top = max(counts, default=0) or 1
    return "".join(_BARS[round(n / top * (len(_BARS) - 1))] for n in counts)
