"""The catalog's database and its data folder are one catalog: a new EAR_DATABASE_URL that is
empty (or another catalog's) beside a folder with tracks is refused, never reconciled into
deleting them; `ear copy-database` moves SQLite's catalog to PostgreSQL."""
from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import room_clip, run_ear
from synth import song

from ear import jobs
from ear.catalog import Catalog
from ear.errors import EarError
from ear.identify import identify
from ear.ids import track_ids


def test_an_empty_database_beside_a_folder_with_tracks_is_refused(filled_catalog, postgres_server):
    config = filled_catalog.config
    with pytest.raises(EarError) as refused:
        Catalog(replace(config, database_url=postgres_server.new_database()))
    assert refused.value.code == "database_mismatch" and "ear copy-database" in refused.value.message
    again = Catalog(config)  # SQLite's catalog, untouched
    assert len(again.tracks()) == 6 and len(again.library().table.track_ids()) == 6


def test_another_catalogs_database_is_refused(filled_catalog, tmp_path):
    other = replace(filled_catalog.config, data_dir=tmp_path / "other")
    Catalog(other)  # a catalog of its own, empty
    with pytest.raises(EarError) as refused:
        Catalog(replace(filled_catalog.config, database_url=f"sqlite:///{other.db_path}"))
    assert refused.value.code == "database_mismatch"


def test_copy_database_moves_the_catalog_to_postgresql(filled_catalog, postgres_server, tmp_path):
    config = filled_catalog.config
    before = [(t.id, t.title, t.content_hash) for t in filled_catalog.tracks()]
    queued = jobs.queue_ingest("c" * 64, "later.flac", {})
    url = postgres_server.new_database()
    said = run_ear(config.data_dir, "copy-database", url).stdout
    assert "6 track" in said and "1 job" in said and f"EAR_DATABASE_URL={url}" in said
    moved = Catalog(replace(config, database_url=url))
    assert [(t.id, t.title, t.content_hash) for t in moved.tracks()] == before
    found = identify(moved.library(), room_clip(song(4), 8, 6, "CLEAN", tmp_path)).matches[0]
    assert found.track.title == "song4"
    assert jobs.queue_ingest("d" * 64, "next.flac", {}).id != queued.id  # a job beside the copied one
    assert not set(track_ids(50)) & {t[0] for t in before}  # the copied ids are never drawn again
    assert run_ear(config.data_dir, "copy-database", url, check=False).returncode == 1  # not empty now
