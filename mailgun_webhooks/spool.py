"""The webhook spool: a SQLite file (WAL) that the receiver writes and the tap reads.

Every verified webhook call becomes one row, committed before the receiver answers 200. The
spool owns three guarantees:

- durability: `synchronous=FULL`, so a committed row survives a crash of the process or host;
- no doubles: one row per Mailgun event, keyed by (event id, event timestamp), because Mailgun's
  ids are unique only within a day and a retried delivery carries the same event;
- no replays: every signature token is kept until its timestamp is too old to pass the
  receiver's freshness check, in the same file, so a restart forgets nothing.

`seq` is an AUTOINCREMENT key: SQLite never reuses it, even after pruning, and a single writer
commits rows in `seq` order, so a reader that resumes after the last `seq` it saw neither skips
nor repeats a row. That `seq` is the `webhook_events` stream's bookmark.

Writes go through `SpoolWriter`, one thread that commits whatever requests are pending in one
transaction (group commit): one fsync serves many concurrent requests.
"""

from __future__ import annotations

import enum
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
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
    signed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_signed_at ON tokens (signed_at);
"""


class SpoolError(RuntimeError):
    """The spool cannot be opened or written; the caller should answer 503 so Mailgun retries."""


class Outcome(enum.Enum):
    """What the spool did with one delivery."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the event is already spooled; nothing written but the token
    REPLAYED = "replayed"  # the signature token was already used; nothing written


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


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled event as the tap reads it."""

    seq: int
    domain: str
    received_at: str
    event_data: dict[str, Any]


def connect(path: str | Path, *, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open (creating if needed) the spool at `path` in WAL mode with durable commits."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise SpoolError(
                f"spool {path} was written by a newer version (schema {version}); "
                "upgrade tap-mailgun or point --spool at a new file"
            )
        if version < SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except (sqlite3.Error, OSError) as exc:
        raise SpoolError(f"cannot open the webhook spool {path}: {exc}") from exc
    return conn


class Spool:
    """Reading and pruning the spool (the tap's side). Not for concurrent use across threads."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._conn = connect(path, busy_timeout_s=busy_timeout_s)

    def read_after(self, seq: int, *, batch_size: int = 1000) -> Iterator[SpooledEvent]:
        """Every spooled event with a sequence above `seq`, in sequence order."""
        last = seq
        while True:
            rows = self._conn.execute(
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
        with self._transaction():
            cursor = self._conn.execute(
                "DELETE FROM events WHERE seq <= ? AND received_at < ?",
                (read_through, received_before),
            )
        return cursor.rowcount

    def last_sequence(self) -> int:
        """The highest `seq` this spool ever gave out (pruned rows included); 0 when none."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def count(self) -> int:
        """How many events the spool holds."""
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def event_keys(self) -> list[tuple[str, float]]:
        """(event id, event timestamp) of every spooled event, in sequence order."""
        rows = self._conn.execute("SELECT event_id, event_timestamp FROM events ORDER BY seq")
        return [(str(i), float(t)) for i, t in rows]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


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
        path: str | Path,
        *,
        token_ttl_s: int,
        busy_timeout_s: float = 5.0,
        max_batch: int = 512,
        max_pending: int = 20_000,
    ) -> None:
        self.path = Path(path)
        self.token_ttl_s = token_ttl_s
        self.max_batch = max_batch
        self._conn = connect(path, busy_timeout_s=busy_timeout_s)
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
        """Commit what is pending, then stop the thread and close the file."""
        if self.alive:
            self._queue.put(_STOP)
            self._thread.join()
        self._conn.close()

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
            with _Transaction(self._conn) as conn:
                outcomes = [self._write(conn, delivery) for delivery, _ in batch]
                self._sweep_tokens(conn)
        except Exception as exc:  # the thread must survive to serve the next batch
            error = SpoolError(f"cannot write the webhook spool {self.path}: {exc}")
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)

    @staticmethod
    def _write(conn: sqlite3.Connection, d: Delivery) -> Outcome:
        fresh_token = conn.execute(
            "INSERT OR IGNORE INTO tokens (token, signed_at) VALUES (?, ?)", (d.token, d.signed_at)
        ).rowcount
        if not fresh_token:
            return Outcome.REPLAYED
        stored = conn.execute(
            "INSERT OR IGNORE INTO events"
            " (event_id, event_timestamp, domain, received_at, event_data)"
            " VALUES (?, ?, ?, ?, ?)",
            (d.event_id, d.event_timestamp, d.domain, d.received_at, d.event_data),
        ).rowcount
        return Outcome.STORED if stored else Outcome.DUPLICATE

    def _sweep_tokens(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if now < self._next_token_sweep:
            return
        self._next_token_sweep = now + 60
        conn.execute("DELETE FROM tokens WHERE signed_at < ?", (int(now) - self.token_ttl_s,))
