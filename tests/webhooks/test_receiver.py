"""The receiver over real HTTP: every kind of call gets its answer; only good ones are spooled."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fakes.events import mailgun_event
from fakes.webhook_payloads import SIGNING_KEY, signature, signed_body
from mailgun_webhooks.spool import Spool
from tests.webhooks.conftest import RunningReceiver, post


def spooled(path: Path) -> list[tuple[str, float]]:
    """(id, timestamp) of every event in the spool, in arrival order."""
    with Spool(path) as spool:
        return spool.event_keys()


def test_a_signed_event_is_spooled_before_the_200(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    event = mailgun_event("failed", recipient="bob@example.org")
    answer = post(receiver.url, signed_body(event))
    assert (answer.status_code, answer.json()) == (200, {"message": "stored"})
    # A separate connection sees the row as soon as the 200 is out: it was committed first.
    with Spool(spool_path) as spool:
        (row,) = list(spool.read_after(0))
    assert row.event_data == event
    assert row.domain == "mg.example.com"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (signed_body(mailgun_event(), key="not-the-signing-key"), 401),
        (signed_body(mailgun_event(), timestamp=1_600_000_000), 401),
        (b'{"signature": {"timestamp": "1", "token": "t"', 400),
        (json.dumps({"signature": signature(), "event-data": "delivered"}).encode(), 400),
        (signed_body(mailgun_event(id="")), 400),
    ],
    ids=["forged", "stale", "truncated-json", "event-data-not-an-object", "no-event-id"],
)
def test_bad_calls_are_answered_and_nothing_is_spooled(
    receiver: RunningReceiver, spool_path: Path, body: bytes, status: int
) -> None:
    answer = post(receiver.url, body)
    assert answer.status_code == status
    assert "message" in answer.json()
    assert spooled(spool_path) == []


def test_a_token_reused_with_another_event_is_refused(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    sig = signature()
    first = mailgun_event("opened")
    assert post(receiver.url, signed_body(first, token=sig["token"])).status_code == 200
    # Same token around a different event: Mailgun's signature does not cover the body.
    replay = post(receiver.url, signed_body(mailgun_event("clicked"), token=sig["token"]))
    assert replay.status_code == 401
    assert "replay" in replay.json()["message"]
    assert spooled(spool_path) == [(first["id"], first["timestamp"])]


def test_mailguns_retry_with_the_original_signature_is_acknowledged_for_hours(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    # Mailgun got no 200 for this call 7 hours ago (the receiver was down) and resends it,
    # signature block and all, on its schedule's last retries.
    event = mailgun_event("failed", recipient="late@example.org")
    body = signed_body(event, timestamp=int(time.time()) - 7 * 3600)
    assert post(receiver.url, body).json() == {"message": "stored"}
    # Stored, but the 200 was lost on the way: the very same body comes again.
    again = post(receiver.url, body)
    assert (again.status_code, again.json()) == (200, {"message": "duplicate"})
    assert spooled(spool_path) == [(event["id"], event["timestamp"])]
    # Older than the freshness window (12 h): refused, and not spooled.
    too_old = signed_body(mailgun_event(), timestamp=int(time.time()) - 13 * 3600)
    assert post(receiver.url, too_old).status_code == 401
    assert len(spooled(spool_path)) == 1


def test_a_spooled_event_is_acknowledged_whatever_its_token(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    first, second = mailgun_event("delivered"), mailgun_event("opened")
    token = signature()["token"]
    assert post(receiver.url, signed_body(first, token=token)).json() == {"message": "stored"}
    assert post(receiver.url, signed_body(second)).json() == {"message": "stored"}
    # The first event again with its own token, the second with the first's token: both are
    # already spooled, so both get 200 and nothing is written.
    for body in (signed_body(first, token=token), signed_body(second, token=token)):
        answer = post(receiver.url, body)
        assert (answer.status_code, answer.json()) == (200, {"message": "duplicate"})
    assert spooled(spool_path) == [
        (first["id"], first["timestamp"]),
        (second["id"], second["timestamp"]),
    ]


def test_a_redelivered_event_is_acknowledged_once_spooled(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    event = mailgun_event("delivered")
    assert post(receiver.url, signed_body(event)).json() == {"message": "stored"}
    again = post(receiver.url, signed_body(event))  # Mailgun's retry: new token, same event
    assert (again.status_code, again.json()) == (200, {"message": "duplicate"})
    same_id_next_day = {**event, "timestamp": event["timestamp"] + 86_400}
    assert post(receiver.url, signed_body(same_id_next_day)).json() == {"message": "stored"}
    assert spooled(spool_path) == [
        (event["id"], event["timestamp"]),
        (event["id"], event["timestamp"] + 86_400),
    ]


def test_oversized_bodies_get_413(
    start_receiver: Callable[..., RunningReceiver], spool_path: Path
) -> None:
    receiver = start_receiver(max_body_bytes=4096)
    big = signed_body(mailgun_event(**{"user-variables": {"blob": "x" * 5000}}))
    assert post(receiver.url, big).status_code == 413
    # Without a Content-Length (chunked), the limit holds while reading.
    chunked = requests.post(
        receiver.url,
        data=iter([big[:3000], big[3000:]]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert chunked.status_code == 413
    assert post(receiver.url, signed_body(mailgun_event())).status_code == 200
    assert len(spooled(spool_path)) == 1


def test_an_unwritable_spool_answers_503_and_keeps_the_token_usable(
    start_receiver: Callable[..., RunningReceiver], spool_path: Path
) -> None:
    receiver = start_receiver(busy_timeout_s=0.05)
    body = signed_body(mailgun_event("complained"))
    blocker = sqlite3.connect(spool_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    try:
        assert post(receiver.url, body).status_code == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Nothing was committed, so Mailgun's retry of the very same call is accepted.
    assert post(receiver.url, body).status_code == 200
    assert len(spooled(spool_path)) == 1


def test_concurrent_calls_lose_nothing_and_double_nothing(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    events = [mailgun_event("delivered", recipient=f"r{i}@example.org") for i in range(150)]
    deliveries = events + events[:50]  # a third of them delivered twice, new tokens

    def send(event: dict[str, object]) -> int:
        """Post one event, signed afresh; returns the status."""
        return post(receiver.url, signed_body(event)).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(send, deliveries))
    assert statuses == [200] * len(deliveries)
    keys = spooled(spool_path)
    assert sorted(keys) == sorted((e["id"], e["timestamp"]) for e in events)


def test_healthz_and_unknown_routes(receiver: RunningReceiver) -> None:
    health = requests.get(receiver.base_url + "/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert requests.get(receiver.url, timeout=10).status_code == 405
    assert requests.post(receiver.base_url + "/webhooks/other", timeout=10).status_code == 404


def test_rejected_bodies_and_the_key_stay_out_of_the_logs(
    receiver: RunningReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret_recipient = "do-not-log-me@example.org"
    caplog.set_level(logging.DEBUG)
    forged = signed_body(mailgun_event(recipient=secret_recipient), key="forger")
    assert post(receiver.url, forged).status_code == 401
    assert post(receiver.url, b'{"broken ' + secret_recipient.encode()).status_code == 400
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused a webhook call" in logged  # the refusals are logged...
    assert secret_recipient not in logged  # ...without their bodies
    assert SIGNING_KEY not in logged


def test_a_stopped_spool_writer_shows_in_healthz_and_answers_503(
    receiver: RunningReceiver, spool_path: Path
) -> None:
    receiver.writer.stop()
    health = requests.get(receiver.base_url + "/healthz", timeout=10)
    assert health.status_code == 503
    assert post(receiver.url, signed_body(mailgun_event())).status_code == 503
    assert spooled(spool_path) == []
