"""A catalog's database copied into another: SQLite's catalog moved to PostgreSQL when it grows
(`ear copy-database URL`)."""
from __future__ import annotations

from pathlib import Path

from peewee import AutoField

from .db import INSERT_ROWS, MODELS, Setting, Track, database, init_db, is_sqlite, write_transaction
from .errors import EarError


def copy_database(source: Path | str, target: str) -> dict[str, int]:
    """Copy every row of the catalog at `source` into the database at `target` (which must hold
    no tracks), ids and the catalog's id included: SQLite's catalog moved to PostgreSQL.
    {table: rows copied}. Leaves the models bound to `target`."""
    init_db(source)
    with database.connection_context():
        rows = {model: list(model.select().dicts()) for model in MODELS}
    init_db(target)
    copied = {}
    with database.connection_context(), write_transaction():
        if Track.select().exists():
            raise EarError("database_not_empty", f"{target} holds tracks already: copy into an "
                           "empty database.", 409)
        Setting.delete().execute()  # its own catalog id: it becomes the copied catalog's
        for model, items in rows.items():
            for start in range(0, len(items), INSERT_ROWS):
                model.insert_many(items[start: start + INSERT_ROWS]).execute()
            copied[model._meta.table_name] = len(items)
            if not is_sqlite() and isinstance(model._meta.primary_key, AutoField) and items:
                # Rows came with their ids: the next id the server hands out follows them.
                database.execute_sql(f"SELECT setval(pg_get_serial_sequence('{model._meta.table_name}', "
                                     f"'id'), (SELECT max(id) FROM \"{model._meta.table_name}\"))")
    return copied
