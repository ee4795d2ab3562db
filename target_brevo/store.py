"""The engagement store: per-contact aggregates and the outbox of what Brevo still has to get.

One SQLAlchemy connection, SQLite by default (any URL works; Postgres for shared runs). It keeps:
- `events`: the identity (Mailgun id, timestamp) of every event ever applied, so a replayed event
  is never counted or sent twice, and the Brevo payload of events not yet accepted (`pending`);
- `messages`: per contact, each message delivered/opened/clicked, which the rates are made of;
- `contacts`: per contact, the flags, names and latest validation verdict the rules need, and
  `dirty` while Brevo is behind (a store from before a column existed gains it on open);
- `imports`: the contacts of each Brevo import accepted (202) but not yet confirmed completed,
  so a failed import puts exactly its contacts back to dirty, even runs later;
- `pushed`: per contact, the blocklist flag and lists Brevo accepted, so the summary counts
  only what changed;
- `run_lock`: which run uses the store now, with a lease that a thread renews while the run
  lives, so two runs never overlap, and another machine takes over only after one died; a run
  finding it held may wait a bounded time for it (the fast lane and the 15-minute job);
- `meta`: small named values, e.g. the fingerprint of the rule settings Brevo was written with,
  and the form of the event identities (`rules.event_identity`: to the millisecond; a store
  written with microseconds is converted once, by `use_millisecond_identities`).
Commits are explicit (`commit`); in dry-run nothing is ever committed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    inspect,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from plugin_cli import SettingError, data_path, database_url
from target_brevo import rules
from target_brevo.rules import ContactFacts, ContactState, EventFacts

if TYPE_CHECKING:
    from sqlalchemy.sql.expression import ClauseElement

_CHUNK = 2000  # bound on bound parameters per statement (SQLite allows 32766)
# A live run renews its lease every fifth of it (a thread of its own, and at commits), so a
# run another machine sees unrenewed for this long is dead, whatever it was busy with.
LOCK_LEASE_SECONDS = 5 * 60.0
# A run waiting for the store retries this often: a fast-lane run holds it for seconds.
LOCK_POLL_SECONDS = 1.0

# The meta key that records the form of stored event identities, and the current form.
IDENTITY_META = "event_identity"
IDENTITY_FORM = "millisecond"

metadata = MetaData()
events_table = Table(
    "brevo_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("timestamp", String(40), primary_key=True),
    Column("pending", Boolean, nullable=False),
    Column("payload", Text),
    # pending_events (pending, oldest first) and forget_old_events (sent, older than a cutoff)
    # both filter on pending then timestamp: without it each is a scan of every event identity.
    Index("ix_brevo_events_pending_timestamp", "pending", "timestamp"),
)
messages_table = Table(
    "brevo_messages",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("message_id", String(998), primary_key=True),
    Column("opened", Boolean, nullable=False),
    Column("clicked", Boolean, nullable=False),
)
contacts_table = Table(
    "brevo_contacts",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("last_delivered", String(10)),
    Column("hard_bounce", Boolean, nullable=False),
    Column("soft_bounce", Boolean, nullable=False),
    Column("complained", Boolean, nullable=False),
    Column("unsubscribed", Boolean, nullable=False),
    Column("engaged", Boolean, nullable=False),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("dirty", Boolean, nullable=False),
    # Mailgun's latest verdict on the address (rules.Verdict); added after the first release
    Column("validation_result", Text),
    Column("validation_risk", Text),
    Column("validated_at", String(40)),
    Index("ix_brevo_contacts_dirty", "dirty"),
)
imports_table = Table(
    "brevo_imports",
    metadata,
    Column("process_id", BigInteger, primary_key=True),
    Column("email", String(254), primary_key=True),
)
pushed_table = Table(
    "brevo_pushed",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("blocklisted", Boolean, nullable=False),
    Column("list_ids", Text, nullable=False),  # sorted, comma-separated
)
lock_table = Table(
    "brevo_run_lock",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),  # epoch seconds
)
meta_table = Table(
    "brevo_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text),
)


def default_store_path() -> Path:
    """Where the SQLite store lives when `engagement_store` is not set (see `data_path`)."""
    return data_path("target-brevo", "engagement.sqlite")


def store_url(setting: str | None) -> str:
    """`engagement_store` as an SQLAlchemy URL (see `database_url`).

    A path's folder must exist: a typo must not start an empty store beside the real one
    (its aggregates would restart from nothing).
    """
    return database_url("engagement_store", setting, default_store_path())


def _open_engine(url: str) -> Engine:
    """The engine of `url` with the store's tables; a URL that cannot work is a SettingError
    saying what to do (the URL is shown without its password)."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
        engine = create_engine(url)
    except ModuleNotFoundError as exc:
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        fix = (
            "install the [postgres] extra: pip install 'mailgun-brevo-singer[postgres]' "
            "(in Meltano: add [postgres] to the pip_url, then meltano install)"
            if dialect == "postgresql"
            else f"install the Python package that provides {exc.name}"
        )
        raise SettingError(
            f"engagement_store: the {dialect} driver ({exc.name}) is not installed; {fix}"
        ) from None
    except (ArgumentError, NoSuchModuleError):
        raise SettingError(
            "engagement_store is neither a file path nor a database URL SQLAlchemy knows; "
            "write a path, sqlite:///path or postgresql://user@host/db"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
        for table in metadata.sorted_tables:  # create_all skips indexes of existing tables
            for index in table.indexes:
                index.create(engine, checkfirst=True)
        _add_missing_columns(engine)
    except OperationalError as exc:
        engine.dispose()
        fix = (
            "choose a file in a folder the target can write"
            if engine.dialect.name == "sqlite"
            else "check the server, the user and the password in the URL"
        )
        raise SettingError(f"engagement_store: cannot open {shown} ({exc.orig}); {fix}") from None
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a store was made (create_all skips existing tables): added, empty.

    Only nullable columns are ever added, so every row of an older store stays valid. Two runs
    opening an old store at once may both try: the one that finds the column there is fine.
    """

    def columns(table: Table) -> set[str]:
        return {column["name"] for column in inspect(engine).get_columns(table.name)}

    for table in metadata.sorted_tables:
        have = columns(table)
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(
                        f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'
                    )
            except SQLAlchemyError:
                if column.name not in columns(table):
                    raise


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LockHolder(NamedTuple):
    """The row of the run lock: which run holds the store, where, and until when."""

    owner: str
    host: str
    pid: int
    expires_at: float  # epoch seconds


class RunLockedError(Exception):
    """Another run holds the engagement store."""


def this_machine() -> str:
    """Who may judge a run by its pid: the host name, and on Linux the pid namespace.

    Two containers may share a host name (host networking) but never see each other's
    processes: to each other they are two machines, kept apart by the lease alone.
    """
    with contextlib.suppress(OSError):
        return f"{socket.gethostname()} {Path('/proc/self/ns/pid').readlink()}"
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngagementStore:
    """Persistence for the target: aggregates, applied events and the outbox to Brevo."""

    def __init__(
        self, url: str, *, dry_run: bool = False, lease_seconds: float = LOCK_LEASE_SECONDS
    ) -> None:
        self.dry_run = dry_run
        self.lease_seconds = lease_seconds
        self.engine = _open_engine(url)
        self.conn: Connection = self.engine.connect()
        self._insert = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        self._compiled: dict[str, tuple[str, Sequence[str] | None]] = {}
        self._lock_owner: str | None = None
        self._lock_renewed = 0.0
        self.events_withheld = 0  # by this store object: events never sent (apply_events)
        self._lease: _LeaseKeeper | None = None

    # --- transactions ---------------------------------------------------------------------
    def commit(self) -> None:
        """Make everything since the last commit durable (never in dry-run); renew the lock."""
        if self.dry_run:
            return
        if self._lock_owner and (
            time.time() - self._lock_renewed > self.lease_seconds / 5
            or (self._lease is not None and self._lease.lost)
        ):
            self._renew_lock()
        self.conn.commit()

    def close(self) -> None:
        """Roll back anything uncommitted, release the run lock and the database."""
        self.conn.rollback()
        if self._lease is not None:
            self._lease.stop()
            self._lease = None
        if self._lock_owner:
            lock = lock_table.c
            self.conn.execute(delete(lock_table).where(lock.owner == self._lock_owner))
            self.conn.commit()
            self._lock_owner = None
        self.conn.close()
        self.engine.dispose()

    # --- the run lock ---------------------------------------------------------------------
    def lock_run(
        self, wait_seconds: float = 0.0, on_wait: Callable[[], None] | None = None
    ) -> float:
        """Take the store for this run, waiting up to `wait_seconds` while another run has it
        (polled every LOCK_POLL_SECONDS; `on_wait` is called once, when the wait starts); the
        seconds waited, or RunLockedError naming the run that still has it (see `_take_lock`).
        """
        started, tries = time.monotonic(), 0
        while True:
            try:
                self._take_lock()
            except RunLockedError:
                left = wait_seconds - (time.monotonic() - started)
                if left <= 0:
                    raise
                if on_wait is not None and not tries:
                    on_wait()
                tries += 1
                time.sleep(min(LOCK_POLL_SECONDS, left))
            else:
                return time.monotonic() - started if tries else 0.0

    def _take_lock(self) -> None:
        """Take the store for this run, or raise RunLockedError naming the run that has it.

        A row with a lease (renewed by a thread while the run lives, see `_LeaseKeeper`): taken
        when free, expired, or held by a dead process on this machine (a run killed outright
        frees it at once; see `this_machine`). The insert-or-
        take-over is one statement, so two runs starting together cannot both win, on SQLite
        as on Postgres.
        """
        owner, host, pid, now = uuid.uuid4().hex, this_machine(), os.getpid(), time.time()
        lock = lock_table.c
        try:
            held = self._lock_holder()
            # A run killed outright on this machine. Not this very process: two targets in one
            # process are two runs, and must not overlap either.
            dead = held is not None and held.host == host and not _pid_alive(held.pid)
            stmt = self._insert(lock_table).values(
                name="run", owner=owner, host=host, pid=pid, expires_at=now + self.lease_seconds
            )
            free = lock.expires_at < now
            if dead and held is not None:
                free = or_(free, lock.owner == held.owner)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={k: stmt.excluded[k] for k in ("owner", "host", "pid", "expires_at")},
                where=free,
            )
            self.conn.execute(stmt)
            self.conn.commit()
            winner = self._lock_holder()
            self.conn.commit()
        except OperationalError:  # SQLite: the other run is writing right now
            self.conn.rollback()
            raise RunLockedError(
                "another target-brevo run is writing to the engagement store; two runs must "
                "not overlap: let it finish, then rerun"
            ) from None
        if winner is None or winner.owner != owner:
            until = winner.expires_at if winner is not None else now
            who = f"{winner.host} pid {winner.pid}" if winner is not None else "another run"
            raise RunLockedError(
                f"another target-brevo run ({who}) holds the engagement store until "
                f"{datetime.fromtimestamp(until, timezone.utc).isoformat(timespec='seconds')} "
                "unless it renews; two runs must not overlap (they could send the same events "
                "twice): let it finish, or if it died on another machine, wait for that time"
            )
        self._lock_owner, self._lock_renewed = owner, now
        self._lease = _LeaseKeeper(self.engine, owner, self.lease_seconds)
        self._lease.start()

    def _lock_holder(self) -> LockHolder | None:
        """The run that holds the lock (or held it, if expired), or None."""
        lock = lock_table.c
        query = select(lock.owner, lock.host, lock.pid, lock.expires_at).where(lock.name == "run")
        row = self.conn.execute(query).first()
        return LockHolder(row[0], row[1], int(row[2]), float(row[3])) if row else None

    def _renew_lock(self) -> None:
        now = time.time()
        lock = lock_table.c
        result = self.conn.execute(
            update(lock_table)
            .where(lock.name == "run", lock.owner == self._lock_owner)
            .values(expires_at=now + self.lease_seconds)
        )
        if not result.rowcount:
            self.conn.rollback()
            self._lock_owner = None
            raise RunLockedError(
                "this run's lock on the engagement store expired and another run took it; "
                "stopping before the two overlap: nothing uncommitted is kept"
            )
        self._lock_renewed = now

    def _executemany(self, name: str, stmt: ClauseElement, rows: Sequence[dict[str, Any]]) -> None:
        """Run `stmt` once per row through the driver's executemany.

        The statement is compiled once per store for this database's dialect, so the hot path
        pays no per-row SQLAlchemy overhead (it dominated the cost of a batch).
        """
        if not rows:
            return
        if name not in self._compiled:
            compiled = stmt.compile(dialect=self.engine.dialect, column_keys=list(rows[0]))
            positional = self.engine.dialect.positional
            order: Sequence[str] | None = (
                getattr(compiled, "positiontup", None) if positional else None
            )
            self._compiled[name] = (str(compiled), order)
        sql, order = self._compiled[name]
        for chunk in _chunks(rows, 10 * _CHUNK):
            params: Any = [tuple(r[k] for k in order) for r in chunk] if order else list(chunk)
            self.conn.exec_driver_sql(sql, params)

    # --- applying input -------------------------------------------------------------------
    def apply_events(self, facts: Iterable[EventFacts]) -> int:
        """Record events not seen before and fold them into contacts; returns how many were new.

        A new event of a contact withheld from Brevo (`rules.withheld`: Brevo could create the
        contact from it) is recorded but never sent, and counted in `events_withheld`.
        """
        batch = {f.key: f for f in facts}
        e = events_table.c
        known = select(e.id, e.timestamp).where(e.id.in_(bindparam("ids", expanding=True)))
        replayed: list[ContactState] = []
        for chunk in _chunks(list({k[0] for k in batch})):
            for seen in self.conn.execute(known, {"ids": list(chunk)}):
                again = batch.pop((seen[0], seen[1]), None)
                if again is not None and again.verdict is not None:
                    # the event counts once, but the verdict on its address is news
                    replayed.append(rules.with_verdict(ContactState(again.email), again.verdict))
        self.upsert_contacts(replayed)
        new = list(batch.values())
        if not new:
            return 0
        merged = self.upsert_contacts(map(rules.event_contact, new), touched=True)
        withheld = self.withheld(merged.values())
        unsent = [f for f in new if f.email in withheld and f.brevo_event is not None]
        if unsent:
            new = [f._replace(brevo_event=None) if f.email in withheld else f for f in new]
        self._insert_events(new)
        self._upsert_messages(new)
        self.events_withheld += len(unsent)
        return len(new)

    def withheld(self, states: Iterable[ContactState]) -> set[str]:
        """The emails of these contacts that are withheld from Brevo (`rules.withheld`)."""
        suspects = [s.email for s in states if rules.withheld(s.validation_result, False)]
        if not suspects:
            return set()
        known = self.pushed(suspects)
        return {email for email in suspects if email not in known}

    def contacts(self, emails: Sequence[str]) -> dict[str, ContactState]:
        """What the store knows of these contacts (apart from their messages), by email."""
        c = contacts_table.c
        query = select(*(c[name] for name in ContactState._fields)).where(
            c.email.in_(bindparam("emails", expanding=True))
        )
        known: dict[str, ContactState] = {}
        for chunk in _chunks(emails):
            for row in self.conn.execute(query, {"emails": list(chunk)}):
                known[row[0]] = ContactState._make(row)
        return known

    def upsert_contacts(
        self, states: Iterable[ContactState], *, touched: bool = False
    ) -> dict[str, ContactState]:
        """Merge what is newly known of contacts into the store (`rules.merge_contact`); returns
        the merged contacts, by email.

        A contact becomes dirty when it is new, when the merge changes it, or when `touched`
        (its messages changed); an unchanged contact is not written at all, so full-table
        streams (list_members) resent every run cost one read.
        """
        batch = rules.fold_contacts(states)
        if not batch:
            return {}
        known = self.contacts(list(batch))
        rows = []
        for email, new in batch.items():
            old = known.get(email)
            merged = new if old is None else rules.merge_contact(old, new)
            batch[email] = merged
            if touched or merged != old:
                rows.append({**merged._asdict(), "dirty": True})
        stmt = self._insert(contacts_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["email"],
            set_={name: stmt.excluded[name] for name in (*ContactState._fields[1:], "dirty")},
        )
        self._executemany("write_contacts", stmt, rows)
        return batch

    def _insert_events(self, facts: Sequence[EventFacts]) -> None:
        encode = msgspec.json.encode
        rows = [
            {
                "id": f.key[0],
                "timestamp": f.key[1],
                "pending": f.brevo_event is not None,
                "payload": encode(f.brevo_event).decode() if f.brevo_event is not None else None,
            }
            for f in facts
        ]
        self._executemany("insert_events", events_table.insert(), rows)

    def _upsert_messages(self, facts: Sequence[EventFacts]) -> None:
        messages: dict[tuple[str, str], dict[str, Any]] = {}
        for f in facts:
            marks = rules.message_marks(f)
            if marks is None:
                continue
            row = messages.setdefault(
                (f.email, f.message_id or ""),
                {"email": f.email, "message_id": f.message_id, "opened": False, "clicked": False},
            )
            row["opened"] |= marks[0]
            row["clicked"] |= marks[1]
        if not messages:
            return
        stmt = self._insert(messages_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["email", "message_id"],
            set_={
                "opened": or_(messages_table.c.opened, stmt.excluded.opened),
                "clicked": or_(messages_table.c.clicked, stmt.excluded.clicked),
            },
        )
        self._executemany("upsert_messages", stmt, list(messages.values()))

    # --- the outbox -----------------------------------------------------------------------
    def dirty_contacts(self, after: str = "", limit: int = 5000) -> list[ContactFacts]:
        """Contacts Brevo is behind on, in email order after `after`, with their aggregates."""
        c, m = contacts_table.c, messages_table.c
        query = (
            select(
                c.email,
                func.count(m.message_id),
                func.coalesce(func.sum(case((m.opened, 1), else_=0)), 0),
                func.coalesce(func.sum(case((m.clicked, 1), else_=0)), 0),
                c.last_delivered,
                c.hard_bounce,
                c.soft_bounce,
                c.complained,
                c.unsubscribed,
                c.engaged,
                c.first_name,
                c.last_name,
                c.validation_result,
                c.validation_risk,
            )
            .select_from(contacts_table.outerjoin(messages_table, m.email == c.email))
            .where(c.dirty == true(), c.email > after)
            .group_by(*contacts_table.c)
            .order_by(c.email)
            .limit(limit)
        )
        return [
            ContactFacts(
                email=row[0],
                delivered=int(row[1]),
                opened=int(row[2]),
                clicked=int(row[3]),
                last_delivered=row[4],
                hard_bounce=bool(row[5]),
                soft_bounce=bool(row[6]),
                complained=bool(row[7]),
                unsubscribed=bool(row[8]),
                engaged=bool(row[9]),
                first_name=row[10],
                last_name=row[11],
                validation_result=row[12],
                validation_risk=row[13],
            )
            for row in self.conn.execute(query)
        ]

    def mark_clean(self, emails: Sequence[str]) -> None:
        """Brevo has these contacts as the store does."""
        for chunk in _chunks(emails):
            self.conn.execute(
                update(contacts_table)
                .where(contacts_table.c.email.in_(chunk))
                .values(dirty=false())
            )

    def pending_events(self, limit: int = 5000) -> list[tuple[tuple[str, str], bytes]]:
        """Events Brevo has not accepted yet: ((id, timestamp), JSON payload), oldest first."""
        e = events_table.c
        query = (
            select(e.id, e.timestamp, e.payload)
            .where(e.pending == true())
            .order_by(e.timestamp, e.id)
            .limit(limit)
        )
        return [((row[0], row[1]), row[2].encode()) for row in self.conn.execute(query)]

    def forget_old_events(self, days: float) -> int:
        """Drop the identities of sent events `days` older than the newest one; how many.

        They only guard against a replay, and Mailgun cannot replay what it no longer keeps
        (30 days at most): without this the table would grow by one row per event forever.
        Counted from the newest event rather than the clock, so a backfill is never forgotten.
        """
        e = events_table.c
        newest = self.conn.execute(select(func.max(e.timestamp))).scalar()
        if newest is None:
            return 0
        # never later than now: one event stamped in the future must not forget everything
        cutoff = min(datetime.fromisoformat(newest), datetime.now(timezone.utc)) - timedelta(
            days=days
        )
        oldest = cutoff.isoformat(timespec="microseconds")
        result = self.conn.execute(
            delete(events_table).where(e.pending == false(), e.timestamp < oldest)
        )
        return int(result.rowcount or 0)

    def mark_sent(self, keys: Iterable[tuple[str, str]]) -> None:
        """Brevo accepted (or definitively refused) these events: never send them again."""
        e = events_table.c
        rows = [{"k_id": k[0], "k_ts": k[1]} for k in keys]
        stmt = (
            update(events_table)
            .where(e.id == bindparam("k_id"), e.timestamp == bindparam("k_ts"))
            .values(pending=false(), payload=null())
        )
        self._executemany("mark_sent", stmt, rows)

    def pushed(self, emails: Sequence[str]) -> dict[str, tuple[bool, frozenset[int]]]:
        """What Brevo was last given for these contacts: (blocklisted, list ids)."""
        p = pushed_table.c
        known: dict[str, tuple[bool, frozenset[int]]] = {}
        for chunk in _chunks(emails):
            query = select(p.email, p.blocklisted, p.list_ids).where(p.email.in_(chunk))
            for email, blocklisted, list_ids in self.conn.execute(query):
                ids = frozenset(int(i) for i in list_ids.split(",") if i)
                known[email] = (bool(blocklisted), ids)
        return known

    def record_pushed(self, rows: Sequence[tuple[str, bool, frozenset[int]]]) -> None:
        """Brevo accepted these contacts with this blocklist flag and these lists."""
        stmt = self._insert(pushed_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["email"],
            set_={"blocklisted": stmt.excluded.blocklisted, "list_ids": stmt.excluded.list_ids},
        )
        encoded = [
            {"email": e, "blocklisted": b, "list_ids": ",".join(map(str, sorted(ids)))}
            for e, b, ids in rows
        ]
        self._executemany("record_pushed", stmt, encoded)

    def record_import(self, process_id: int, emails: Sequence[str]) -> None:
        """Brevo accepted an import of these contacts; it is unconfirmed until it completes."""
        rows = [{"process_id": process_id, "email": email} for email in emails]
        self._executemany("record_import", imports_table.insert(), rows)

    def unconfirmed_imports(self) -> list[int]:
        """Process ids of imports Brevo accepted and nobody saw complete yet, oldest first."""
        i = imports_table.c
        query = select(i.process_id).distinct().order_by(i.process_id)
        return [int(row[0]) for row in self.conn.execute(query)]

    def confirm_import(self, process_id: int, *, completed: bool) -> int:
        """Forget an import that ended; if it did not complete, its contacts are dirty again.

        Returns how many contacts it held.
        """
        i, c = imports_table.c, contacts_table.c
        mine = select(i.email).where(i.process_id == process_id)
        if not completed:
            self.conn.execute(update(contacts_table).where(c.email.in_(mine)).values(dirty=true()))
        result = self.conn.execute(delete(imports_table).where(i.process_id == process_id))
        return int(result.rowcount or 0)

    def correct_rules_v1(self, names: dict[str, str] | None) -> int:
        """Recompute what rules version 1 got wrong; how many contacts lost a hard bounce.

        Events still queued for Brevo carry their reason: a suppression queued as a hard
        bounce is renamed (`rules.corrected_event`, when events are sent at all: `names`) and
        its contact gets the flag it means. Then every contact's hard bounce flag is
        recomputed (`rules.corrected_hard_bounce`) and the contacts it changes become dirty.
        """
        e, c = events_table.c, contacts_table.c
        evidence: list[ContactState] = []
        renamed: list[dict[str, Any]] = []
        queued = select(e.id, e.timestamp, e.payload).where(e.pending == true())
        for event_id, timestamp, payload in self.conn.execute(queued).all():
            decoded = msgspec.json.decode(payload)
            found = rules.suppression_evidence(decoded)
            if found is None:
                continue
            email, flag = found
            evidence.append(
                ContactState(
                    email, unsubscribed=flag == "unsubscribed", complained=flag == "complained"
                )
            )
            fixed = rules.corrected_event(decoded, names) if names is not None else None
            if fixed is not None:
                encoded = msgspec.json.encode(fixed).decode()
                renamed.append({"k_id": event_id, "k_ts": timestamp, "payload": encoded})
        rename = (
            update(events_table)
            .where(e.id == bindparam("k_id"), e.timestamp == bindparam("k_ts"))
            .values(payload=bindparam("payload"))
        )
        self._executemany("rename_events", rename, renamed)
        self.upsert_contacts(evidence)
        suspects = select(c.email, c.hard_bounce, c.unsubscribed, c.complained).where(
            c.hard_bounce == true()
        )
        wrong = [
            {"k_email": email}
            for email, hard, unsubscribed, complained in self.conn.execute(suspects).all()
            if not rules.corrected_hard_bounce(hard, unsubscribed, complained)
        ]
        correct = (
            update(contacts_table)
            .where(c.email == bindparam("k_email"))
            .values(hard_bounce=false(), dirty=true())
        )
        self._executemany("correct_contacts", correct, wrong)
        return len(wrong)

    def mark_all_dirty(self) -> int:
        """Every contact needs writing again (the rules changed); how many contacts there are."""
        result = self.conn.execute(update(contacts_table).values(dirty=true()))
        return int(result.rowcount or 0)

    def use_millisecond_identities(self) -> int:
        """Convert identities stored with microseconds to `rules.event_identity` (once: the
        meta key says so); returns how many changed. Two stored identities that become one
        were one event seen twice (say, by webhook and by the Events API at different
        precisions, before this): the first is kept."""
        if self.get_meta(IDENTITY_META) == IDENTITY_FORM:
            return 0
        e = events_table.c
        old = self.conn.execute(
            select(e.id, e.timestamp)
            .where(func.substr(e.timestamp, 24, 3) != "000")
            .order_by(e.timestamp, e.id)
        ).all()
        ids = list({row[0] for row in old})
        taken: set[tuple[str, str]] = set()
        cut = select(e.id, e.timestamp).where(
            e.id.in_(bindparam("ids", expanding=True)), func.substr(e.timestamp, 24, 3) == "000"
        )
        for chunk in _chunks(ids):
            taken.update((row[0], row[1]) for row in self.conn.execute(cut, {"ids": list(chunk)}))
        moved: list[dict[str, Any]] = []
        merged: list[dict[str, Any]] = []
        for event_id, timestamp in old:
            key = rules.event_identity(event_id, timestamp)
            row = {"k_id": event_id, "k_ts": timestamp, "new_ts": key[1]}
            (merged if key in taken else moved).append(row)
            taken.add(key)
        at = (e.id == bindparam("k_id"), e.timestamp == bindparam("k_ts"))
        self._executemany("merge_identities", delete(events_table).where(*at), merged)
        move = update(events_table).where(*at).values(timestamp=bindparam("new_ts"))
        self._executemany("move_identities", move, moved)
        self.set_meta(IDENTITY_META, IDENTITY_FORM)
        return len(old)

    def get_meta(self, key: str) -> str | None:
        """A named value kept in the store, or None."""
        m = meta_table.c
        return self.conn.execute(select(m.value).where(m.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        """Keep a named value (committed with the next commit)."""
        stmt = self._insert(meta_table).values(key=key, value=value)
        self.conn.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value})
        )

    def has_outstanding(self) -> bool:
        """Whether any contact or event is still waiting for Brevo."""
        for table in (contacts_table, events_table):
            flag = table.c.dirty if table is contacts_table else table.c.pending
            if self.conn.execute(select(flag).where(flag == true()).limit(1)).first():
                return True
        return False

    def counts(self) -> dict[str, int]:
        """Rows per table, for humans and tests."""
        return {
            table.name: int(self.conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (events_table, messages_table, contacts_table)
        }


class _LeaseKeeper(threading.Thread):
    """Renews a run's lease every fifth of it, on a connection of its own, until stopped.

    Commits alone would not do: a run waiting on a slow tap or on Brevo commits nothing for
    minutes and would look dead to another machine. A renewal that finds the row no longer
    this run's sets `lost`; the next commit then stops the run (see `_renew_lock`). A failed
    renewal (SQLite busy with the run's own write, the database briefly away) is retried at
    the next tick: four can fail before the lease runs out.
    """

    def __init__(self, engine: Engine, owner: str, lease_seconds: float) -> None:
        super().__init__(name="target-brevo-run-lease", daemon=True)
        self.engine, self.owner, self.lease_seconds = engine, owner, lease_seconds
        self.lost = False
        self._stopped = threading.Event()

    def run(self) -> None:
        """Renew until stopped or lost; the connection lives and dies in this thread."""
        lock = lock_table.c
        renew = update(lock_table).where(lock.name == "run", lock.owner == self.owner)
        with self.engine.connect() as conn:
            while not self._stopped.wait(self.lease_seconds / 5):
                try:
                    result = conn.execute(renew.values(expires_at=time.time() + self.lease_seconds))
                    conn.commit()
                except SQLAlchemyError:
                    conn.rollback()
                    continue
                if not result.rowcount:
                    self.lost = True
                    return

    def stop(self) -> None:
        """Stop renewing (the run ends and releases the lock itself)."""
        self._stopped.set()
        self.join()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + NORMAL: durable at each commit's checkpoint, far faster than the default journal.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
