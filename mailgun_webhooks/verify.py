"""Verifying a Mailgun webhook call: pure functions, no I/O.

Mailgun signs `signature.timestamp + signature.token` with the webhook signing key
(hex HMAC-SHA256); the signature does not cover the event, so freshness and token reuse are
checked too (freshness here; reuse by the spool, which keeps the tokens with their event).
`parse_delivery` turns one body into the `Delivery` the spool stores, or raises `Rejected` with
the HTTP status to answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from datetime import datetime, timezone
from typing import Any

from mailgun_webhooks.spool import Delivery

# Mailgun retries a call that got no 200 for about 8 hours (5 min, 10 min, 15 min, 1 h, 2 h and
# 4 h after the first try: 7 h 30 min in all), and a retry may carry the original signature.
# 12 hours accepts the last retry with margin; the spool keeps each token as long, so a replay
# is refused all the same.
DEFAULT_MAX_AGE_S = 12 * 3600
# Mailgun's bodies are a few kilobytes; a larger one is refused (413) before it is read whole.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class Rejected(Exception):
    """A webhook call refused with `status`; `reason` is safe to log and to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(signing_key: bytes, timestamp: str, token: str) -> str:
    """Mailgun's signature: hex HMAC-SHA256 of `timestamp + token` keyed with the signing key."""
    return hmac.new(signing_key, (timestamp + token).encode(), hashlib.sha256).hexdigest()


def signature_matches(
    signing_key: bytes, timestamp: str, token: str, signatures: list[str]
) -> bool:
    """Whether any of the given signatures is right, compared in constant time.

    Mailgun sends `signature` and, for a subaccount's domain, also `parent-signature` (signed
    with the primary account's key); either one verifies the call.
    """
    expected = sign(signing_key, timestamp, token).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures)


def sending_domain(event_data: dict[str, Any]) -> str | None:
    """The Mailgun sending domain an event belongs to, lower-cased; None when unknown.

    Current webhook payloads carry `domain.name`; older ones only the envelope sender
    (`postmaster@mg.example.com`) or a Mailgun message id (`<...@mg.example.com>`).
    """
    domain = event_data.get("domain")
    if isinstance(domain, dict) and isinstance(domain.get("name"), str) and domain["name"]:
        return str(domain["name"]).lower()
    envelope = event_data.get("envelope")
    sender = envelope.get("sender") if isinstance(envelope, dict) else None
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = headers.get("message-id") if isinstance(headers, dict) else None
    for address in (sender, message_id):
        if isinstance(address, str) and "@" in address:
            return address.rsplit("@", 1)[1].strip("<> ").lower() or None
    return None


def _signature_fields(signature: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(timestamp, token, signatures) of Mailgun's `signature` object, or Rejected(400)."""
    timestamp, token = signature.get("timestamp"), signature.get("token")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)  # the docs call it an int; Mailgun sends a string
    given = [signature.get(k) for k in ("signature", "parent-signature")]
    signatures = [s for s in given if isinstance(s, str) and s]
    if not (isinstance(timestamp, str) and timestamp.isascii() and timestamp.isdigit()):
        raise Rejected(400, "`signature.timestamp` must be epoch seconds")
    if not (isinstance(token, str) and token and signatures):
        raise Rejected(400, "`signature` needs a `token` and a `signature`")
    return timestamp, token, signatures


def parse_delivery(body: bytes, *, signing_key: bytes, max_age_s: int, now: float) -> Delivery:
    """Verify one webhook body; returns the delivery to spool.

    Raises `Rejected(400)` for a malformed body and `Rejected(401)` for a wrong signature or a
    timestamp more than `max_age_s` away from `now`. Replay is the spool's check (it keeps the
    tokens).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the body is not JSON; Mailgun's webhooks post JSON") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "the body is not a JSON object")
    signature, event = payload.get("signature"), payload.get("event-data")
    if not isinstance(signature, dict) or not isinstance(event, dict):
        raise Rejected(400, "the body needs a `signature` object and an `event-data` object")
    timestamp, token, signatures = _signature_fields(signature)
    event_id, event_ts, event_name = event.get("id"), event.get("timestamp"), event.get("event")
    if not (isinstance(event_id, str) and event_id and isinstance(event_name, str)):
        raise Rejected(400, "`event-data` needs an `id` and an `event`")
    if isinstance(event_ts, bool) or not isinstance(event_ts, (int, float)):
        raise Rejected(400, "`event-data.timestamp` must be epoch seconds")
    if not math.isfinite(event_ts):  # NaN would not even store in SQLite
        raise Rejected(400, "`event-data.timestamp` must be epoch seconds")
    domain = sending_domain(event)
    if domain is None:
        raise Rejected(400, "cannot tell the sending domain: no domain.name nor envelope.sender")
    if not signature_matches(signing_key, timestamp, token, signatures):
        raise Rejected(401, "bad signature; check MAILGUN_WEBHOOK_SIGNING_KEY")
    if abs(now - int(timestamp)) > max_age_s:
        raise Rejected(401, f"signature timestamp more than {max_age_s} s from now; check clocks")
    return Delivery(
        token=token,
        signed_at=int(timestamp),
        event_id=event_id,
        event_timestamp=float(event_ts),
        domain=domain,
        event_data=json.dumps(event, separators=(",", ":")),
        received_at=datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="microseconds"),
    )
