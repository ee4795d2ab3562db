"""Fixtures shared by every test: fakes of the vendor APIs, checked against the official specs,
and one real PostgreSQL server for the session (started only if a test asks for it); and how a
console script must fail when the user got something wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

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


# A log record at ERROR or CRITICAL in the plugins' log format ("... | ERROR    | logger | ...").
LOGGED_ERROR = re.compile(r"\| (ERROR|CRITICAL) +\|")


class Finished(Protocol):
    """A console script that ran to its end (a CompletedProcess, or a test's own Run)."""

    returncode: int
    stderr: str


def one_line_error(done: Finished) -> str:
    """The last line of a console script that failed as a user should see it: a non-zero exit,
    no traceback on stderr, the error in its last line (returned) and no error logged before
    it (such as singer-sdk's "An unhandled error occurred while syncing 'bounces'")."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "An unhandled error occurred" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines, "the script failed without saying why"
    logged_before = [line for line in lines[:-1] if LOGGED_ERROR.search(line)]
    assert logged_before == [], done.stderr
    return lines[-1]
