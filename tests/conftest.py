"""Fixtures shared by every test: fakes of the vendor APIs, checked against the official specs,
and one real PostgreSQL server for the session (started only if a test asks for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server of this test session's own, stopped at the end (also on
    failures); see fakes/postgres.py for where its binaries come from."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server: `postgresql://postgres@127.0.0.1:PORT/t_…`
    (libpq form; the engagement store and the webhook spool take it as it is)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
