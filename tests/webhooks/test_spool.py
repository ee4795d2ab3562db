"""The spool on its own: group commit under concurrency, dedup, replay, sequence, upkeep."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fakes.events import mailgun_event
from fakes.receiver_process import BIN
from mailgun_webhooks.spool import Delivery, Outcome, Spool, SpoolError, SpoolWriter


def delivery(
    token: str, event_id: str, *, signed_at: int | None = None, ts: float = 1.5
) -> Delivery:
    """A verified call for event `event_id`, signed now unless `signed_at` says otherwise."""
    event = mailgun_event(timestamp=ts, event_id=event_id)
    return Delivery(
        token=token,
        signed_at=int(time.time()) if signed_at is None else signed_at,
        event_id=event_id,
        event_timestamp=ts,
        domain="mg.example.com",
        event_data=json.dumps(event),
        received_at="2026-11-27T00:00:00.000000+00:00",
    )


@pytest.fixture
def writer(spool_path: Path) -> Iterator[SpoolWriter]:
    """A running writer on the test's spool."""
    started = SpoolWriter(spool_path, token_ttl_s=960).start()
    yield started
    started.stop()


def test_concurrent_submissions_are_each_decided_once(
    writer: SpoolWriter, spool_path: Path
) -> None:
    # 400 calls from 8 threads: 300 distinct events, 50 redeliveries, 50 replayed tokens.
    calls = [delivery(f"tok-{i}", f"ev-{i}") for i in range(300)]
    calls += [delivery(f"tok-re-{i}", f"ev-{i}") for i in range(50)]
    calls += [delivery(f"tok-{i}", f"ev-replay-{i}") for i in range(50)]

    def submit(d: Delivery) -> Outcome:
        """Submit and wait for the commit."""
        return writer.submit(d).result(timeout=30)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(submit, calls))
    # A replayed token can win the race against its original, never both.
    assert Counter(outcomes) == {Outcome.STORED: 300, Outcome.DUPLICATE: 50, Outcome.REPLAYED: 50}
    with Spool(spool_path) as spool:
        rows = list(spool.read_after(0))
    assert [r.seq for r in rows] == list(range(1, 301))
    assert len({r.event_data["id"] for r in rows}) == 300


def test_the_same_id_on_another_day_is_another_event(writer: SpoolWriter, spool_path: Path) -> None:
    assert writer.submit(delivery("a", "same", ts=1.0)).result() is Outcome.STORED
    assert writer.submit(delivery("b", "same", ts=86_401.0)).result() is Outcome.STORED
    with Spool(spool_path) as spool:
        assert spool.event_keys() == [("same", 1.0), ("same", 86_401.0)]


def test_a_submission_given_up_before_its_turn_is_not_written(spool_path: Path) -> None:
    writer = SpoolWriter(spool_path, token_ttl_s=960, busy_timeout_s=30).start()
    blocker = sqlite3.connect(spool_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer waits on its first batch
    try:
        first = writer.submit(delivery("t1", "first"))
        while not first.running():
            time.sleep(0.01)
        queued = writer.submit(delivery("t2", "gave-up"))
        assert queued.cancel()  # what the receiver's timeout does before answering 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert first.result(timeout=30) is Outcome.STORED
    writer.stop()
    with Spool(spool_path) as spool:
        assert [k for k, _ in spool.event_keys()] == ["first"]


def test_stop_commits_everything_pending(spool_path: Path) -> None:
    writer = SpoolWriter(spool_path, token_ttl_s=960).start()
    futures = [writer.submit(delivery(f"t{i}", f"e{i}")) for i in range(500)]
    writer.stop()
    assert {f.result(timeout=0) for f in futures} == {Outcome.STORED}
    assert writer.submit(delivery("late", "late")).exception() is not None  # stopped: refused
    with Spool(spool_path) as spool:
        assert spool.count() == 500


def test_tokens_too_old_to_replay_are_forgotten(writer: SpoolWriter, spool_path: Path) -> None:
    old = int(time.time()) - 10_000
    writer.submit(delivery("ancient", "e1", signed_at=old)).result()
    writer.submit(delivery("fresh", "e2")).result()
    tokens = sqlite3.connect(spool_path).execute("SELECT token FROM tokens").fetchall()
    assert tokens == [("fresh",)]


def test_a_version_1_spool_is_upgraded_in_place(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    old = sqlite3.connect(spool_path)
    old.executescript(
        """
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
            event_timestamp REAL NOT NULL, domain TEXT NOT NULL, received_at TEXT NOT NULL,
            event_data TEXT NOT NULL, UNIQUE (event_id, event_timestamp));
        CREATE TABLE tokens (token TEXT PRIMARY KEY, signed_at INTEGER NOT NULL) WITHOUT ROWID;
        PRAGMA user_version=1;
        """
    )
    old.execute("INSERT INTO tokens VALUES ('old-token', ?)", (int(time.time()),))
    old.commit()
    old.close()
    writer = SpoolWriter(spool_path, token_ttl_s=960).start()
    try:
        # A token kept by version 1 has no event: seen again with any event, it is a replay.
        assert writer.submit(delivery("old-token", "e1")).result() is Outcome.REPLAYED
        assert writer.submit(delivery("new-token", "e1")).result() is Outcome.STORED
        assert writer.submit(delivery("new-token", "e1")).result() is Outcome.DUPLICATE
    finally:
        writer.stop()
    assert sqlite3.connect(spool_path).execute("PRAGMA user_version").fetchone() == (2,)


def test_a_spool_from_a_newer_version_is_refused(spool_path: Path) -> None:
    Spool(spool_path).close()
    conn = sqlite3.connect(spool_path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(SpoolError, match="newer version"):
        Spool(spool_path)


def test_the_receiver_says_when_the_spool_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [str(BIN / "tap-mailgun-webhooks"), "--spool", str(blocker / "spool.sqlite")],
        env={"MAILGUN_WEBHOOK_SIGNING_KEY": "k", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot open the webhook spool" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_writers_on_one_spool_share_one_sequence(spool_path: Path) -> None:
    writers = [SpoolWriter(spool_path, token_ttl_s=960).start() for _ in range(2)]
    try:
        futures = [
            writers[i % 2].submit(delivery(f"t{i}", f"e{i}")) for i in range(400)
        ]  # interleaved: both commit concurrently
        assert {f.result(timeout=60) for f in futures} == {Outcome.STORED}
    finally:
        for w in writers:
            w.stop()
    with Spool(spool_path) as spool:
        assert [e.seq for e in spool.read_after(0)] == list(range(1, 401))
        assert spool.last_sequence() == 400
