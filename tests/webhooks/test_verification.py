"""The receiver's pure rules: Mailgun's signature, freshness, body shape, sending domain."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING

import pytest

from fakes.events import mailgun_event
from fakes.webhook_payloads import SIGNING_KEY, signature, signed_body
from mailgun_webhooks.verify import (
    DEFAULT_MAX_AGE_S,
    Rejected,
    parse_delivery,
    sending_domain,
    sign,
)

if TYPE_CHECKING:
    from mailgun_webhooks.spool import Delivery

KEY = SIGNING_KEY.encode()
NOW = 1_790_000_000.0


def parse(body: bytes, now: float = NOW, max_age_s: int = 900) -> Delivery:
    """parse_delivery with the tests' key, at a fixed `now`."""
    return parse_delivery(body, signing_key=KEY, max_age_s=max_age_s, now=now)


def test_sign_is_hmac_sha256_of_timestamp_then_token() -> None:
    # Mailgun's documented example construction, computed independently of `sign`.
    expected = hmac.new(b"key", b"1770920772" + b"tok", hashlib.sha256).hexdigest()
    assert sign(b"key", "1770920772", "tok") == expected


def test_a_signed_event_becomes_a_delivery() -> None:
    event = mailgun_event("failed", NOW - 5, recipient="bob@example.org")
    body = signed_body(event, timestamp=int(NOW))
    delivery = parse_delivery(body, signing_key=KEY, max_age_s=900, now=NOW)
    assert delivery.event_id == event["id"]
    assert delivery.event_timestamp == NOW - 5
    assert delivery.domain == "mg.example.com"
    assert delivery.signed_at == int(NOW)
    assert json.loads(delivery.event_data) == event
    assert delivery.received_at.startswith("2026-")


def test_parent_signature_verifies_a_subaccount_event() -> None:
    sig = signature("the-subaccount-key", timestamp=int(NOW))
    sig["parent-signature"] = sign(KEY, sig["timestamp"], sig["token"])
    body = json.dumps({"signature": sig, "event-data": mailgun_event()}).encode()
    assert parse(body).token == sig["token"]


def test_an_integer_timestamp_is_signed_as_its_digits() -> None:
    sig = signature(timestamp=int(NOW))
    body = {"signature": {**sig, "timestamp": int(NOW)}, "event-data": mailgun_event()}
    assert parse(json.dumps(body).encode()).signed_at == int(NOW)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (signed_body(mailgun_event(), key="someone-elses-key", timestamp=int(NOW)), 401),
        (signed_body(mailgun_event(), timestamp=int(NOW) - 901), 401),
        (signed_body(mailgun_event(), timestamp=int(NOW) + 901), 401),
        (b"event=delivered&token=x", 400),
        (b"[]", 400),
        (b"\xff\xfe", 400),
        (json.dumps({"event-data": mailgun_event()}).encode(), 400),
        (json.dumps({"signature": signature(timestamp=int(NOW))}).encode(), 400),
        (signed_body({"event": "delivered", "timestamp": NOW}, timestamp=int(NOW)), 400),
        (signed_body(mailgun_event(timestamp="yesterday"), timestamp=int(NOW)), 400),
        (signed_body(mailgun_event(timestamp=float("nan")), timestamp=int(NOW)), 400),
        (signed_body(mailgun_event(domain={}, envelope={}, message={}), timestamp=int(NOW)), 400),
    ],
    ids=[
        "forged",
        "stale",
        "from-the-future",
        "form-encoded",
        "not-an-object",
        "not-utf8",
        "no-signature",
        "no-event-data",
        "no-event-id",
        "text-timestamp",
        "nan-timestamp",
        "no-domain",
    ],
)
def test_bad_bodies_are_rejected_with_their_status(body: bytes, status: int) -> None:
    with pytest.raises(Rejected) as rejected:
        parse(body)
    assert rejected.value.status == status
    assert SIGNING_KEY not in rejected.value.reason


@pytest.mark.parametrize("timestamp", ["soon", "\u0661\u0662\u0663", "", "-5", True, None])
def test_a_signature_with_a_non_numeric_timestamp_is_malformed(timestamp: object) -> None:
    sig = {**signature(timestamp=int(NOW)), "timestamp": timestamp}
    body = json.dumps({"signature": sig, "event-data": mailgun_event()}).encode()
    with pytest.raises(Rejected) as rejected:
        parse(body)
    assert rejected.value.status == 400


def test_max_age_is_the_boundary() -> None:
    body = signed_body(mailgun_event(), timestamp=int(NOW) - 60)
    assert parse(body, max_age_s=60).signed_at == int(NOW) - 60
    with pytest.raises(Rejected):
        parse(body, max_age_s=59)


# Mailgun's retries after the first try, in minutes: 5, 10, 15, 60, 120, 240.
MAILGUN_RETRY_GAPS_MIN = (5, 10, 15, 60, 120, 240)


def test_the_default_window_accepts_mailguns_last_retry_with_its_original_signature() -> None:
    signed_at = int(NOW)
    body = signed_body(mailgun_event(), timestamp=signed_at)
    last_retry = NOW + 60 * sum(MAILGUN_RETRY_GAPS_MIN)  # 7 h 30 min after signing
    assert parse(body, now=last_retry, max_age_s=DEFAULT_MAX_AGE_S).signed_at == signed_at
    assert 60 * sum(MAILGUN_RETRY_GAPS_MIN) + 3600 <= DEFAULT_MAX_AGE_S  # an hour of margin
    with pytest.raises(Rejected) as stale:
        parse(body, now=NOW + DEFAULT_MAX_AGE_S + 1, max_age_s=DEFAULT_MAX_AGE_S)
    assert stale.value.status == 401


@pytest.mark.parametrize(
    ("event_data", "domain"),
    [
        (
            {"domain": {"name": "MG.Example.com"}, "envelope": {"sender": "x@other.com"}},
            "mg.example.com",
        ),
        ({"envelope": {"sender": "postmaster@mg.example.com"}}, "mg.example.com"),
        ({"message": {"headers": {"message-id": "<2026.abc@mg.example.com>"}}}, "mg.example.com"),
        ({"envelope": {"sender": ""}, "message": {}}, None),
        ({}, None),
    ],
)
def test_sending_domain(event_data: dict[str, object], domain: str | None) -> None:
    assert sending_domain(event_data) == domain


def test_helpers_sign_with_the_wall_clock() -> None:
    # The helpers sign with the wall clock; a body they build now is fresh now.
    body = signed_body(mailgun_event())
    assert parse(body, now=time.time()).domain == "mg.example.com"
