"""Collector fixtures: a real uvicorn server on loopback, real SQLite files, real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.pki import PKI, make_pki
from collector._helpers import CollectorServer, pg_base_url

_PG: list[str | None] = []


@pytest.fixture
def pg_url() -> str:
    if not _PG:
        _PG.append(pg_base_url())
    if _PG[0] is None:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (database 'test', users postgres/root)")
    return _PG[0]


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A unique schema for this test, dropped afterwards."""
    import psycopg

    schema = f"certpin_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def report_pki() -> PKI:
    return make_pki(("reports.example.test",))


@pytest.fixture(params=["httptools", "h11"])
def sqlite_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CollectorServer]:
    """The collector on SQLite under each HTTP parser `certpin serve --http` offers."""
    db = str(tmp_path / "db" / "certpin.sqlite3")
    with CollectorServer(db, rate_limit=None, http=request.param) as srv:
        yield srv
