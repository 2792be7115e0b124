"""The owner's commands about who may use ear and where its data lives: `ear users add | list |
revoke`, `ear copy-database`; and the check of `--library` that every command shares."""
from __future__ import annotations

import argparse
import json

from . import users
from .catalog import Catalog
from .config import Config
from .db import copy_database
from .errors import NotFound
from .libraries import OWNER, check_name


def add_owner_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="the people who may upload to and search their own library")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("add", help="add a user and print their key (shown this once)")
    q.add_argument("name", help="also their library's name: lowercase letters, digits, - and _")
    q = actions.add_parser("list", help="the users, and whether their key still opens")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = actions.add_parser("revoke", help="close a user's key for good (their tracks stay)")
    q.add_argument("name")

    p = sub.add_parser("copy-database", help="copy the catalog's database into an empty one at URL "
                                             "(then set EAR_DATABASE_URL to it)")
    p.add_argument("url", help="e.g. postgresql://ear:PASSWORD@localhost/ear")


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
