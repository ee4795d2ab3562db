"""Webhook calls shaped like Mailgun's (JSON `signature` + `event-data`), for tests and bench.

The event-data follows Mailgun's published webhook payloads: `domain.name`, `envelope.sender`,
dashed keys, float `timestamp`, `delivery-status` on failures.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from mailgun_webhooks.verify import sign

SIGNING_KEY = "whsk-test-0123456789abcdef"  # the tests' webhook signing key
DOMAIN = "mg.example.com"


def mailgun_event(
    event: str = "delivered",
    *,
    event_id: str | None = None,
    timestamp: float | None = None,
    recipient: str = "alice@example.com",
    domain: str = DOMAIN,
    **extra: Any,
) -> dict[str, Any]:
    """One event-data object as Mailgun posts it; `extra` keys are added as given."""
    data: dict[str, Any] = {
        "account": {"id": "5f1e0c0d0e0f101112131415"},
        "domain": {"name": domain},
        "envelope": {"sender": f"postmaster@{domain}", "targets": recipient, "transport": "smtp"},
        "event": event,
        "id": event_id or secrets.token_urlsafe(16),
        "timestamp": time.time() if timestamp is None else timestamp,
        "recipient": recipient,
        "recipient-domain": recipient.rsplit("@", 1)[1],
        "log-level": "error" if event == "failed" else "info",
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "message": {
            "headers": {
                "message-id": f"{secrets.token_hex(8)}@{domain}",
                "subject": "Your November statement",
                "from": f"Billing <billing@{domain}>",
                "to": recipient,
            },
            "size": 2048,
        },
        "tags": ["statements"],
        "user-variables": {},
    }
    data.update(extra)
    return data


def hard_bounce(recipient: str, **extra: Any) -> dict[str, Any]:
    """A permanent failure (hard bounce) as Mailgun posts it."""
    return mailgun_event(
        "failed",
        recipient=recipient,
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist",
                "description": "",
                "attempt-no": 1,
            }
        },
        **extra,
    )


def signature(
    key: str = SIGNING_KEY, *, timestamp: int | None = None, token: str | None = None
) -> dict[str, str]:
    """A `signature` object: fresh timestamp, random 50-character token, HMAC by `key`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    tok = token or secrets.token_hex(25)
    return {"timestamp": ts, "token": tok, "signature": sign(key.encode(), ts, tok)}


def signed_body(event_data: dict[str, Any], key: str = SIGNING_KEY, **sig: Any) -> bytes:
    """A complete webhook body for `event_data`, signed with `key`."""
    return json.dumps({"signature": signature(key, **sig), "event-data": event_data}).encode()
