"""The webhook spool on PostgreSQL, for receivers on several machines sharing one spool.

Needs psycopg 3 (the `postgres` extra); spool.py imports this module only for a
`postgresql://` spool, and turns its `PostgresSpoolError` into a `SpoolError` (this module
imports nothing of spool.py: no import circle). The tables are those of the SQLite spool, in
the schema `mailgun_webhooks` of the database the URL names, so they sit beside anything else
there; `mailgun_webhooks.spool` holds their schema version (PostgreSQL spools started at 1,
with tokens kept with their event).

Commit order: a sequence value is drawn before its transaction commits, so with two writers a
row with a lower `seq` can become visible after one with a higher `seq`, and a reader that had
already moved past it would skip it. Every write transaction therefore takes one advisory
lock before its first write and holds it until it has committed (PostgreSQL releases an
xact lock only after the commit is visible): transactions that write commit one at a time, in
`seq` order, as in SQLite. Group commit keeps that cheap: one lock and one commit serve a whole
batch. A writer killed mid-transaction has its transaction rolled back and its lock released
by the server; its `seq` values are gaps, which readers never wait for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

SCHEMA_VERSION = 1
SCHEMA = "mailgun_webhooks"
# pg_advisory_xact_lock's key for "a spool write is in flight": any bigint, fixed for all writers.
WRITE_LOCK_KEY = 0x6D67_7768_6B73  # "mgwhks"
_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.spool (schema_version integer NOT NULL);
CREATE SEQUENCE IF NOT EXISTS {SCHEMA}.events_seq;
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    seq bigint PRIMARY KEY DEFAULT nextval('{SCHEMA}.events_seq'),
    event_id text NOT NULL,
    event_timestamp double precision NOT NULL,
    domain text NOT NULL,
    received_at text NOT NULL,
    event_data text NOT NULL,
    UNIQUE (event_id, event_timestamp)
);
ALTER SEQUENCE {SCHEMA}.events_seq OWNED BY {SCHEMA}.events.seq;
CREATE INDEX IF NOT EXISTS events_received_at ON {SCHEMA}.events (received_at);
CREATE TABLE IF NOT EXISTS {SCHEMA}.tokens (
    token text PRIMARY KEY,
    signed_at bigint NOT NULL,
    event_digest text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tokens_signed_at ON {SCHEMA}.tokens (signed_at);
"""


class PostgresSpoolError(RuntimeError):
    """The PostgreSQL spool cannot be opened; spool.py reports it as a `SpoolError`."""


def safe_location(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class PostgresDatabase:
    """A spool in PostgreSQL; one connection, reopened after the server dropped it."""

    def __init__(self, url: str, *, busy_timeout_s: float = 5.0) -> None:
        # SQLAlchemy's spelling (what target-brevo's engagement_store takes) works too.
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.location = safe_location(url)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._conn = self._connect()
        try:
            self._create_or_check()
        except (psycopg.Error, PostgresSpoolError) as exc:
            self._conn.close()
            if isinstance(exc, PostgresSpoolError):
                raise
            raise PostgresSpoolError(
                f"cannot open the webhook spool {self.location}: {exc}"
            ) from exc

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            # Durable before 200, whatever the server's default; waiting for a lock (the
            # other writer's commit) is bounded like SQLite's busy timeout.
            conn.execute("SET synchronous_commit = on")
            conn.execute(f"SET lock_timeout = {self._busy_timeout_ms}")
            conn.execute(f"SET search_path = {SCHEMA}")
        except psycopg.Error as exc:
            raise PostgresSpoolError(
                f"cannot open the webhook spool {self.location}: {exc}"
            ) from exc
        return conn

    def _create_or_check(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:  # the usual case: no DDL, no table lock
            return
        # Two receivers starting together would race on CREATE ... IF NOT EXISTS: the write
        # lock makes one wait for the other.
        with self.transaction():
            version = self._schema_version()
            if version is not None and version > SCHEMA_VERSION:
                raise PostgresSpoolError(
                    f"spool {self.location} was written by a newer version (schema {version}); "
                    "upgrade tap-mailgun or point --spool at another database"
                )
            for statement in _DDL.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            if version is None:
                self._conn.execute(
                    "INSERT INTO spool (schema_version) VALUES (%s)", (SCHEMA_VERSION,)
                )

    def _schema_version(self) -> int | None:
        exists = self._conn.execute("SELECT to_regclass('mailgun_webhooks.spool')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = self._conn.execute("SELECT max(schema_version) FROM spool").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement; the spool's `?` placeholders become psycopg's `%s`."""
        return self._conn.execute(sql.replace("?", "%s"), params)

    @contextmanager
    def transaction(self) -> Iterator[object]:
        """A transaction holding the write lock until it commits (see the module docstring)."""
        if self._conn.broken or self._conn.closed:  # e.g. the server restarted: start afresh
            self._conn = self._connect()
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            yield self._conn

    def last_sequence(self) -> int:
        """The sequence's last value (drawn values of rolled-back writes included); 0 if none."""
        row = self._conn.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq"
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
