"""The webhook spool: where the receiver writes verified calls and the tap reads them.

A spool is a SQLite file (WAL) or a PostgreSQL database (a `postgresql://` URL, for receivers
on several machines; spool_postgres.py, which needs the `postgres` extra). Every verified
webhook call becomes one row, committed before the receiver answers 200. The spool owns four
guarantees:

- durability: SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`, so a committed
  row survives a crash of the process or host;
- no doubles: one row per Mailgun event, keyed by (event id, event timestamp), because Mailgun's
  ids are unique only within a day and a retried delivery carries the same event;
- no replays: every signature token is kept, with a digest of the event it came with, until
  its timestamp is too old to pass the receiver's freshness check, in the same database, so a
  restart forgets nothing. A token seen again with the same event is Mailgun retrying (the
  original signature may be resent); with another event, it is a replay;
- commit order: `seq` is given out in commit order and never reused, even after pruning, so a
  reader that resumes after the last `seq` it saw neither skips nor repeats a row. SQLite
  commits one writer at a time; on PostgreSQL, where a sequence value is drawn before commit,
  each write transaction holds an advisory lock until it commits (spool_postgres.py). That
  `seq` is the `webhook_events` stream's bookmark.

Writes go through `SpoolWriter`, one thread that commits whatever requests are pending in one
transaction (group commit): one fsync serves many concurrent requests. This module needs only
the standard library: the tap imports it without the receiver's or PostgreSQL's packages.
"""

from __future__ import annotations

import enum
import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 2

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    event_timestamp REAL NOT NULL,
    domain TEXT NOT NULL,
    received_at TEXT NOT NULL,
    event_data TEXT NOT NULL,
    UNIQUE (event_id, event_timestamp)
);
CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    signed_at INTEGER NOT NULL,
    event_digest TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_signed_at ON tokens (signed_at);
"""
# Version 1 kept tokens without their event: such a token seen again counts as a replay.
_SQLITE_UPGRADES = {1: "ALTER TABLE tokens ADD COLUMN event_digest TEXT NOT NULL DEFAULT ''"}
_DATABASE_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


class SpoolError(RuntimeError):
    """The spool cannot be opened or written; the caller should answer 503 so Mailgun retries."""


class Outcome(enum.Enum):
    """What the spool did with one delivery."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the event is already spooled (Mailgun retried): nothing written
    REPLAYED = "replayed"  # the signature token came with another event: nothing written


@dataclass(frozen=True)
class Delivery:
    """One verified webhook call, ready to spool."""

    token: str
    signed_at: int
    event_id: str
    event_timestamp: float
    domain: str
    event_data: str  # the `event-data` object as JSON text
    received_at: str  # UTC ISO-8601

    @cached_property
    def event_digest(self) -> str:
        """What the token is kept with: a retry resends the same event, a replay another one."""
        return hashlib.sha256(self.event_data.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled event as the tap reads it."""

    seq: int
    domain: str
    received_at: str
    event_data: dict[str, Any]


class Cursor(Protocol):
    """The part of a DB-API cursor the spool uses (sqlite3's and psycopg's both fit)."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        ...


class Database(Protocol):
    """A spool's database connection: SQLite here, PostgreSQL in spool_postgres.py.

    Statements use `?` placeholders and the tables `events` and `tokens` (on PostgreSQL, in
    the schema `mailgun_webhooks`).
    """

    location: str  # the file or URL, without a password: safe to log

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (outside a transaction it commits at once)."""
        ...

    def transaction(self) -> AbstractContextManager[object]:
        """A write transaction, committed in commit order (see the module's docstring)."""
        ...

    def last_sequence(self) -> int:
        """The highest `seq` ever given out (pruned rows included); 0 when none."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def is_database_url(location: str | Path) -> bool:
    """Whether a spool location names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_DATABASE_SCHEMES)


def open_database(location: str | Path, *, busy_timeout_s: float = 5.0) -> Database:
    """Open (creating its tables if needed) the spool at a SQLite path or a PostgreSQL URL."""
    if not is_database_url(location):
        return SQLiteDatabase(location, busy_timeout_s=busy_timeout_s)
    try:  # imported here: the tap alone installs no PostgreSQL driver
        from mailgun_webhooks.spool_postgres import PostgresDatabase, PostgresSpoolError
    except ImportError:
        raise SpoolError(
            "a PostgreSQL spool needs the psycopg driver: "
            "pip install 'mailgun-brevo-singer[postgres]'"
        ) from None
    try:
        return PostgresDatabase(str(location), busy_timeout_s=busy_timeout_s)
    except PostgresSpoolError as exc:
        raise SpoolError(str(exc)) from exc


class SQLiteDatabase:
    """A spool in a SQLite file, in WAL mode with durable commits."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.location = str(path)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open the webhook spool {path}: {exc}") from exc
        try:
            self._create_or_upgrade()
        except (sqlite3.Error, SpoolError) as exc:
            self._conn.close()
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(f"cannot open the webhook spool {path}: {exc}") from exc

    def _create_or_upgrade(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the usual case: no write lock taken just to open the spool
        with self.transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolError(
                    f"spool {self.location} was written by a newer version (schema {version}); "
                    "upgrade tap-mailgun or point --spool at a new file"
                )
            if version == SCHEMA_VERSION:
                return
            for step in range(version, SCHEMA_VERSION) if version else ():  # 0: a new file
                if step in _SQLITE_UPGRADES:
                    self._conn.execute(_SQLITE_UPGRADES[step])
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement."""
        return self._conn.execute(sql, params)

    def transaction(self) -> _Transaction:
        """BEGIN IMMEDIATE: one writer at a time, so `seq` follows commit order."""
        return _Transaction(self._conn)

    def last_sequence(self) -> int:
        """SQLite's AUTOINCREMENT counter, which outlives deleted rows."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the file."""
        self._conn.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")
        finally:
            if self.conn.in_transaction:  # an error, or a COMMIT that failed
                self.conn.execute("ROLLBACK")


class Spool:
    """Reading and pruning the spool (the tap's side). Not for concurrent use across threads."""

    def __init__(self, location: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self._db = open_database(location, busy_timeout_s=busy_timeout_s)
        self.location = self._db.location

    def read_after(self, seq: int, *, batch_size: int = 1000) -> Iterator[SpooledEvent]:
        """Every spooled event with a sequence above `seq`, in sequence order."""
        last = seq
        while True:
            rows = self._db.execute(
                "SELECT seq, domain, received_at, event_data FROM events"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch_size),
            ).fetchall()
            for row_seq, domain, received_at, event_data in rows:
                yield SpooledEvent(row_seq, domain, received_at, json.loads(event_data))
                last = row_seq
            if len(rows) < batch_size:
                return

    def prune(self, *, read_through: int, received_before: str) -> int:
        """Delete events already read (seq <= read_through) received before the ISO time given."""
        with self._db.transaction():
            cursor = self._db.execute(
                "DELETE FROM events WHERE seq <= ? AND received_at < ?",
                (read_through, received_before),
            )
        return cursor.rowcount

    def last_sequence(self) -> int:
        """The highest `seq` this spool ever gave out (pruned rows included); 0 when none."""
        return self._db.last_sequence()

    def count(self) -> int:
        """How many events the spool holds."""
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def event_keys(self) -> list[tuple[str, float]]:
        """(event id, event timestamp) of every spooled event, in sequence order."""
        rows = self._db.execute(
            "SELECT event_id, event_timestamp FROM events ORDER BY seq"
        ).fetchall()
        return [(str(i), float(t)) for i, t in rows]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Pending = tuple[Delivery, "Future[Outcome]"]
_STOP = object()


class SpoolWriter:
    """The receiver's single writer: group commit of pending deliveries, one thread.

    `submit` returns a future resolved only after the transaction holding the delivery has
    committed (or failed, with `SpoolError`). Tokens older than `token_ttl_s` are forgotten:
    the receiver refuses such old signatures anyway, so they can no longer be replayed.
    """

    def __init__(
        self,
        location: str | Path,
        *,
        token_ttl_s: int,
        busy_timeout_s: float = 5.0,
        max_batch: int = 512,
        max_pending: int = 20_000,
    ) -> None:
        self.token_ttl_s = token_ttl_s
        self.max_batch = max_batch
        self._db = open_database(location, busy_timeout_s=busy_timeout_s)
        self.location = self._db.location
        self._queue: queue.Queue[_Pending | object] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._next_token_sweep = 0.0

    def start(self) -> SpoolWriter:
        """Start the writer thread; returns self."""
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._thread.is_alive()

    def submit(self, delivery: Delivery) -> Future[Outcome]:
        """Queue one delivery; the future resolves after its commit."""
        future: Future[Outcome] = Future()
        if not self.alive:
            future.set_exception(SpoolError("the spool writer is not running"))
            return future
        try:
            self._queue.put_nowait((delivery, future))
        except queue.Full:
            future.set_exception(SpoolError("the spool is overloaded: too many pending writes"))
        return future

    def stop(self) -> None:
        """Commit what is pending, then stop the thread and close the database."""
        if self.alive:
            self._queue.put(_STOP)
            self._thread.join()
        self._db.close()

    # --- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[_Pending] = []
            stopping = first is _STOP
            if not stopping:
                batch.append(first)  # type: ignore[arg-type]
            while len(batch) < self.max_batch and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
            if batch:
                self._commit(batch)
            if stopping:
                return

    def _commit(self, pending: list[_Pending]) -> None:
        # A caller that gave up (its future cancelled, e.g. after a timeout) answered 503, and
        # Mailgun will retry: its delivery is dropped. The others can no longer be cancelled.
        batch = [(d, f) for d, f in pending if f.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            with self._db.transaction():
                outcomes = [self._write(delivery) for delivery, _ in batch]
                self._sweep_tokens()
        except Exception as exc:  # the thread must survive to serve the next batch
            error = SpoolError(f"cannot write the webhook spool {self.location}: {exc}")
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)

    def _write(self, d: Delivery) -> Outcome:
        db = self._db
        held = db.execute(
            "SELECT 1 FROM events WHERE event_id = ? AND event_timestamp = ?",
            (d.event_id, d.event_timestamp),
        ).fetchone()
        used = db.execute("SELECT event_digest FROM tokens WHERE token = ?", (d.token,))
        token_event = used.fetchone()
        if token_event is None:  # kept even for a duplicate: it may not come with another event
            db.execute(
                "INSERT INTO tokens (token, signed_at, event_digest) VALUES (?, ?, ?)",
                (d.token, d.signed_at, d.event_digest),
            )
        if held:  # whatever the token: Mailgun retries until it gets a 200
            return Outcome.DUPLICATE
        if token_event is not None:
            # The same event again under its original signature is a retry of an event since
            # pruned; another event under a used token is a replay.
            return Outcome.DUPLICATE if token_event[0] == d.event_digest else Outcome.REPLAYED
        db.execute(
            "INSERT INTO events"
            " (event_id, event_timestamp, domain, received_at, event_data)"
            " VALUES (?, ?, ?, ?, ?)",
            (d.event_id, d.event_timestamp, d.domain, d.received_at, d.event_data),
        )
        return Outcome.STORED

    def _sweep_tokens(self) -> None:
        now = time.time()
        if now < self._next_token_sweep:
            return
        self._next_token_sweep = now + 60
        cutoff = int(now) - self.token_ttl_s
        self._db.execute("DELETE FROM tokens WHERE signed_at < ?", (cutoff,))
