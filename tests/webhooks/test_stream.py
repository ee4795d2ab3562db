"""The `webhook_events` stream: incremental reads of the spool, record shape, pruning, CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.events import DOMAIN, mailgun_event
from fakes.mailgun import FakeMailgun
from fakes.tap_catalog import select_only
from fakes.webhook_payloads import signed_body
from mailgun_webhooks.spool import Delivery, Spool, SpoolWriter
from target_brevo.rules import event_identity
from tests.tap.conftest import API_KEY, hours_ago, run_cli, run_tap
from tests.webhooks.conftest import RunningReceiver, post

STREAM = "webhook_events"


def config(spool: Path, **overrides: Any) -> dict[str, Any]:
    """A tap config reading the spool; the API is never called for this stream."""
    return {
        "api_key": API_KEY,
        "base_url": "http://127.0.0.1:9",  # nothing listens: a call would fail the test
        "domains": [DOMAIN],
        "webhook_spool_path": str(spool),
        **overrides,
    }


@pytest.fixture
def send(receiver: RunningReceiver) -> Callable[..., dict[str, Any]]:
    """Post one event to the receiver (200 expected); returns the event."""

    def send_one(event: dict[str, Any]) -> dict[str, Any]:
        """Post, expect 200, return the event."""
        assert post(receiver.url, signed_body(event)).status_code == 200
        return event

    return send_one


def test_runs_read_only_what_is_new(send: Callable[..., dict[str, Any]], spool_path: Path) -> None:
    # Event timestamps deliberately out of order: the bookmark is the arrival sequence.
    first = [send(mailgun_event("opened", timestamp=hours_ago(h))) for h in (1, 5, 3)]
    run1 = run_tap(config(spool_path), STREAM)
    assert [r["id"] for r in run1.records[STREAM]] == [e["id"] for e in first]
    assert run1.state["bookmarks"][STREAM]["replication_key_value"] == 3

    later = [send(mailgun_event("clicked", url="https://example.org/x")) for _ in range(2)]
    run2 = run_tap(config(spool_path), STREAM, state=run1.state)
    assert [r["id"] for r in run2.records[STREAM]] == [e["id"] for e in later]
    assert [r["webhook_sequence"] for r in run2.records[STREAM]] == [4, 5]

    run3 = run_tap(config(spool_path), STREAM, state=run2.state)
    assert run3.records[STREAM] == []
    assert run3.state["bookmarks"][STREAM]["replication_key_value"] == 5


def test_start_date_does_not_stand_in_for_the_sequence_bookmark(
    send: Callable[..., dict[str, Any]], spool_path: Path
) -> None:
    # start_date is a time for the polled streams; the spool's bookmark is a sequence number.
    with_start = config(spool_path, start_date="2026-01-01T00:00:00Z")
    first = send(mailgun_event("delivered"))
    run1 = run_tap(with_start, STREAM)
    assert [r["id"] for r in run1.records[STREAM]] == [first["id"]]
    second = send(mailgun_event("opened"))
    run2 = run_tap(with_start, STREAM, state=run1.state)
    assert [r["id"] for r in run2.records[STREAM]] == [second["id"]]
    assert run2.state["bookmarks"][STREAM]["replication_key_value"] == 2


@pytest.mark.parametrize("event_source", ["events", "logs"])
def test_a_record_matches_the_polled_record_of_the_same_event(
    send: Callable[..., dict[str, Any]], spool_path: Path, event_source: str
) -> None:
    when = int(hours_ago(2)) + 0.1234567  # microseconds the Logs API does not show
    bounce = send(mailgun_event("failed", when, recipient="gone@example.org", event_id="bounce-1"))
    polled = mailgun_event("failed", when, recipient="gone@example.org", event_id="bounce-1")
    fake = FakeMailgun(api_key=API_KEY)
    fake.add_domain(DOMAIN)
    fake.add_events(DOMAIN, [polled])
    settings = config(spool_path, base_url=fake.base_url, event_source=event_source)
    with fake:
        run = run_tap(settings, STREAM, "events")
    assert fake.violations == []
    (pushed,) = run.records[STREAM]
    (pulled,) = run.records["events"]
    for key in ("id", "domain", "event", "recipient"):
        assert pushed[key] == pulled[key], key
    if event_source == "events":  # the same float of epoch seconds, microseconds and all
        assert (pushed["timestamp"], pushed["timestamp_epoch"]) == (
            pulled["timestamp"],
            pulled["timestamp_epoch"],
        )
    else:  # the Logs API keeps milliseconds: one identity for target-brevo all the same
        assert pushed["timestamp"] != pulled["timestamp"]
        assert event_identity(pushed["id"], pushed["timestamp"]) == event_identity(
            pulled["id"], pulled["timestamp"]
        )
    assert pushed["domain"] == DOMAIN  # the string, not Mailgun's {"name": ...} object
    assert pushed["severity"] == "permanent"
    assert pushed["delivery_status"]["code"] == bounce["delivery-status"]["code"]
    assert pushed["message"]["headers"]["message_id"] == bounce["message"]["headers"]["message-id"]
    assert pushed["received_at"].endswith("+00:00")


def _spool_directly(path: Path, received: list[str]) -> None:
    writer = SpoolWriter(path, token_ttl_s=960).start()
    try:
        for i, received_at in enumerate(received):
            event = mailgun_event(event_id=f"old-{i}")
            delivery = Delivery(
                token=f"token-{i}",
                signed_at=2_000_000_000,
                event_id=event["id"],
                event_timestamp=event["timestamp"],
                domain=DOMAIN,
                event_data=json.dumps(event),
                received_at=received_at,
            )
            writer.submit(delivery).result(timeout=10)
    finally:
        writer.stop()


def test_rows_read_by_an_earlier_run_are_pruned_after_the_retention(spool_path: Path) -> None:
    _spool_directly(
        spool_path,
        [
            "2020-01-01T00:00:00.000000+00:00",  # seq 1: old, read by the first run
            "2999-01-01T00:00:00.000000+00:00",  # seq 2: recent, read by the first run
            "2020-01-02T00:00:00.000000+00:00",  # seq 3: old, never read before the 2nd run
        ],
    )
    cfg = config(spool_path, webhook_retention_days=7)
    first = run_tap(cfg, STREAM)
    assert len(first.records[STREAM]) == 3
    # Nothing is pruned by the run that reads: its state is not yet saved by the target.
    with Spool(spool_path) as spool:
        assert spool.count() == 3
    partial = {
        "bookmarks": {STREAM: {"replication_key": "webhook_sequence", "replication_key_value": 2}}
    }
    second = run_tap(cfg, STREAM, state=partial)
    assert [r["webhook_sequence"] for r in second.records[STREAM]] == [3]
    with Spool(spool_path) as spool:
        assert [k for k, _ in spool.event_keys()] == ["old-1", "old-2"]


def test_a_missing_spool_reads_nothing_and_says_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_tap(config(tmp_path / "nowhere.sqlite"), STREAM)
    assert run.records[STREAM] == []
    assert "start `tap-mailgun-webhooks --spool" in caplog.text
    assert not (tmp_path / "nowhere.sqlite").exists()  # the tap creates no empty spool


@pytest.fixture
def cli_files(tmp_path: Path, spool_path: Path) -> Iterator[tuple[Path, Path]]:
    """config.json and a catalog selecting only webhook_events, for the console script."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(spool_path)))
    discovered = run_cli("--config", str(cfg), "--discover")
    assert discovered.returncode == 0, discovered.stderr
    catalog = json.loads(discovered.stdout)
    assert STREAM in [s["tap_stream_id"] for s in catalog["streams"]]
    cat = tmp_path / "catalog.json"
    cat.write_text(json.dumps(select_only(catalog, STREAM)))
    yield cfg, cat


def test_the_console_script_reads_the_spool_incrementally(
    send: Callable[..., dict[str, Any]], cli_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg, cat = cli_files
    sent = [send(mailgun_event("delivered")) for _ in range(3)]
    done = run_cli("--config", str(cfg), "--catalog", str(cat))
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert [r["id"] for r in records] == [e["id"] for e in sent]
    state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    again = run_cli("--config", str(cfg), "--catalog", str(cat), "--state", str(state_file))
    assert again.returncode == 0, again.stderr
    assert '"type":"RECORD"' not in again.stdout.replace(" ", "")


def test_a_replaced_spool_is_read_from_the_start_not_skipped(
    send: Callable[..., dict[str, Any]], spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = [send(mailgun_event("complained")) for _ in range(2)]
    # The state of an older spool that had numbered 50 events before it was deleted.
    old = {"bookmarks": {STREAM: {"replication_key": "webhook_sequence",
                                  "replication_key_value": 50}}}  # fmt: skip
    run = run_tap(config(spool_path), STREAM, state=old)
    assert [r["id"] for r in run.records[STREAM]] == [e["id"] for e in sent]
    assert run.state["bookmarks"][STREAM]["replication_key_value"] == 2
    assert "the spool was replaced" in caplog.text


def test_pruning_does_not_look_like_a_replaced_spool(spool_path: Path) -> None:
    _spool_directly(spool_path, ["2020-01-01T00:00:00.000000+00:00"] * 3)
    read = {"bookmarks": {STREAM: {"replication_key": "webhook_sequence",
                                   "replication_key_value": 3}}}  # fmt: skip
    first = run_tap(config(spool_path), STREAM, state=read)  # prunes all three
    with Spool(spool_path) as spool:
        assert spool.count() == 0
    again = run_tap(config(spool_path), STREAM, state=first.state)
    assert again.records[STREAM] == []
    assert again.state["bookmarks"][STREAM]["replication_key_value"] == 3
