"""The spool on a real PostgreSQL server (the test session's own): receivers on several machines.

What must hold as on SQLite: durable before 200, one row per event, replays refused, and a
reader that resumes after the last `seq` skips nothing and repeats nothing, even while two
writers commit at once (PostgreSQL draws a sequence value before commit: spool_postgres.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from fakes.events import DOMAIN, mailgun_event
from fakes.receiver_process import BIN, ReceiverProcess
from fakes.tap_catalog import write_catalog
from fakes.webhook_payloads import signed_body
from mailgun_webhooks.spool import Delivery, Outcome, Spool, SpoolError, SpoolWriter
from tests.tap.conftest import API_KEY, run_tap

STREAM = "webhook_events"


def delivery(token: str, event_id: str, *, signed_at: int | None = None) -> Delivery:
    """A verified call for event `event_id`."""
    event = mailgun_event(timestamp=1.5, event_id=event_id)
    return Delivery(
        token=token,
        signed_at=int(time.time()) if signed_at is None else signed_at,
        event_id=event_id,
        event_timestamp=1.5,
        domain=DOMAIN,
        event_data=json.dumps(event),
        received_at="2026-11-27T00:00:00.000000+00:00",
    )


def test_a_postgres_spool_keeps_the_spools_guarantees(postgres_url: str) -> None:
    writer = SpoolWriter(postgres_url, token_ttl_s=960).start()
    calls = [delivery(f"tok-{i}", f"ev-{i}") for i in range(200)]
    calls += [delivery(f"tok-re-{i}", f"ev-{i}") for i in range(30)]  # Mailgun's redeliveries
    calls += [delivery(f"tok-{i}", f"ev-{i}") for i in range(30, 50)]  # retries, same signature
    calls += [delivery(f"tok-{i}", f"ev-replay-{i}") for i in range(50, 70)]  # replays
    try:
        # Too old to pass the freshness check: the sweep (first batch) forgets its token.
        old = delivery("ancient", "ev-old", signed_at=int(time.time()) - 10_000)
        assert writer.submit(old).result(timeout=60) is Outcome.STORED
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda d: writer.submit(d).result(timeout=60), calls))
    finally:
        writer.stop()
    assert Counter(outcomes) == {Outcome.STORED: 200, Outcome.DUPLICATE: 50, Outcome.REPLAYED: 20}
    with Spool(postgres_url) as spool:
        rows = list(spool.read_after(0))
        assert len(rows) == 201
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)
        assert spool.last_sequence() == rows[-1].seq
        assert spool.prune(read_through=rows[9].seq, received_before="2999") == 10
        assert spool.count() == 191
        assert spool.last_sequence() == rows[-1].seq  # pruning does not rewind the sequence
    with psycopg.connect(postgres_url) as conn:
        tokens = {t for (t,) in conn.execute("SELECT token FROM mailgun_webhooks.tokens")}
        assert "ancient" not in tokens  # too old to pass the freshness check: forgotten
        assert "tok-re-0" in tokens
        conn.execute("UPDATE mailgun_webhooks.spool SET schema_version = 99")
    with pytest.raises(SpoolError, match="newer version"):
        Spool(postgres_url)


def test_a_reader_never_skips_a_row_two_writers_commit_late(postgres_url: str) -> None:
    # Two writers (as two receivers would) commit batches concurrently while a reader keeps
    # resuming after the highest seq it has seen. Were seq values drawn outside commit order,
    # a batch committing after a later-numbered one would fall behind the reader for good.
    writers = [SpoolWriter(postgres_url, token_ttl_s=960, max_batch=64).start() for _ in range(2)]
    seen: list[int] = []
    done = threading.Event()

    def read_continuously() -> None:
        """Resume after the last seq seen, over and over, as scheduled tap runs do."""
        with Spool(postgres_url) as spool:
            while True:
                finished = done.is_set()
                seen.extend(row.seq for row in spool.read_after(seen[-1] if seen else 0))
                if finished:
                    return

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        futures = [writers[i % 2].submit(delivery(f"t{i}", f"e{i}")) for i in range(2000)]
        assert {f.result(timeout=120) for f in futures} == {Outcome.STORED}
    finally:
        for writer in writers:
            writer.stop()
        done.set()
        reader.join(timeout=60)
    with Spool(postgres_url) as spool:
        every = [row.seq for row in spool.read_after(0)]
    assert len(every) == 2000
    assert seen == every  # in order, nothing skipped, nothing twice


def test_two_receivers_one_killed_and_the_stream_reads_each_event_once(
    postgres_url: str, tmp_path: Path
) -> None:
    receivers = [ReceiverProcess(postgres_url, log_dir=tmp_path) for _ in range(2)]
    events = [mailgun_event("delivered", recipient=f"r{i}@example.org") for i in range(1200)]
    bodies = [signed_body(event) for event in events]
    acknowledged: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def deliver(i: int) -> None:
        """Post as Mailgun does: to either replica, resent (same body) until it gets a 200."""
        first = receivers[i % 2]
        for target in (first, receivers[1], receivers[1]):
            if target is receivers[0] and killed.is_set():
                continue
            try:
                answer = requests.post(
                    target.url,
                    data=bodies[i],
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
            except requests.ConnectionError:
                continue  # the killed receiver: Mailgun retries, here to the other replica
            if answer.status_code == 200:
                with lock:
                    acknowledged.add(events[i]["id"])
                return

    config: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": "http://127.0.0.1:9",  # never called for this stream
        "domains": [DOMAIN],
        "webhook_spool_path": postgres_url,
    }
    read: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(deliver, i) for i in range(len(events))]
            while not all(f.done() for f in futures):
                if not killed.is_set() and sum(f.done() for f in futures) > len(events) // 3:
                    receivers[0].stop(signal.SIGKILL)  # mid-load, no graceful shutdown
                    killed.set()
                run = run_tap(config, STREAM, state=state)  # scheduled runs, during the load
                read.extend(run.records[STREAM])
                state = run.state or state
            for future in futures:
                future.result()
        assert killed.is_set()
        run = run_tap(config, STREAM, state=state)
        read.extend(run.records[STREAM])
    finally:
        for receiver in receivers:
            receiver.stop()
    ids = Counter(record["id"] for record in read)
    assert ids.most_common(1)[0][1] == 1  # nothing read twice across runs
    assert acknowledged == {e["id"] for e in events}  # every event got its 200 in the end
    assert set(ids) == acknowledged  # and every one was read
    sequences = [record["webhook_sequence"] for record in read]
    assert sequences == sorted(sequences)


def test_without_the_driver_the_receiver_and_the_tap_name_the_extra(
    postgres_url: str, tmp_path: Path
) -> None:
    # A psycopg that cannot be imported, ahead of the installed one on the path.
    shadow = tmp_path / "no-driver" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    env = {"PYTHONPATH": str(shadow.parent), "MAILGUN_WEBHOOK_SIGNING_KEY": "k", "PATH": ""}
    receiver = subprocess.run(
        [str(BIN / "tap-mailgun-webhooks"), "--spool", postgres_url, "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": API_KEY, "webhook_spool_path": postgres_url}))
    catalog = write_catalog(BIN / "tap-mailgun", config, tmp_path / "catalog.json", STREAM, env=env)
    tap = subprocess.run(
        [str(BIN / "tap-mailgun"), "--config", str(config), "--catalog", str(catalog)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for done in (receiver, tap):
        assert done.returncode != 0
        assert "pip install 'mailgun-brevo-singer[postgres]'" in done.stderr
        assert "Traceback" not in done.stderr
