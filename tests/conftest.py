from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import start_gunicorn  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from synth import song, write  # noqa: E402

from ear.app import create_app  # noqa: E402
from ear.catalog import Catalog  # noqa: E402
from ear.config import load_config  # noqa: E402
from ear.models import shipped_model  # noqa: E402
from ear.ingest import prepare  # noqa: E402

N_SONGS = 6


@pytest.fixture(scope="session")
def songs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("songs")
    for seed in range(N_SONGS):
        write(folder / f"song{seed}.flac", song(seed))
    return folder


def pytest_configure(config):
    config.addinivalue_line("markers", "postgresql: run the test on PostgreSQL as well as on SQLite")


def pytest_generate_tests(metafunc):
    # Tests marked `postgresql` run twice: on SQLite and on a real PostgreSQL server.
    if "database" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("postgresql") is not None
        metafunc.parametrize("database", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def database(request) -> str:
    """EAR_DATABASE_URL of the test's catalog: empty (SQLite in the data folder), or a new
    database on the PostgreSQL server."""
    return request.getfixturevalue("postgres_server").new_database() if request.param == "postgresql" else ""


@pytest.fixture
def config(tmp_path, database):
    return load_config(data_dir=tmp_path / "data", admin_token="test-token", database_url=database)


@pytest.fixture
def catalog(config) -> Catalog:
    return Catalog(config)


@pytest.fixture
def filled_catalog(catalog, songs_dir) -> Catalog:
    catalog.store([prepare(p, catalog.config, shipped_model()) for p in sorted(songs_dir.glob("*.flac"))])
    return catalog


@pytest.fixture
def app(config):
    """The app in this process (routes, errors, JSON); the real Gunicorn is `gunicorn_server`."""
    app = create_app(config)
    app.testing = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def gunicorn_server(tmp_path):
    yield from start_gunicorn(tmp_path)
