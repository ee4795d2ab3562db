"""The builders of a Mailgun event, one per shape: as Mailgun sends it, and as the tap emits it.

`mailgun_event` is one event as the events API lists it and as a webhook posts it (its
`event-data`): dashed keys, float `timestamp`, `domain.name`, `delivery-status` on failures.
`tap_record` is the same event as a tap-mailgun `events` record (built by the tap's own
`event_record`). Both take the same arguments; a webhook call around an event is built in
webhook_payloads.py. The generator of realistic traffic (traffic.py) builds its own events,
with the variety a month of mail has.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from tap_mailgun.records import event_record

DOMAIN = "mg.example.com"
RECIPIENT = "alice@example.com"
# A permanent failure unless a test says otherwise: Mailgun's hard bounce.
HARD_BOUNCE = {
    "severity": "permanent",
    "reason": "bounce",
    "delivery-status": {
        "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist",
        "description": "",
        "attempt-no": 1,
    },
}


def mailgun_event(
    event: str = "delivered",
    timestamp: float | None = None,
    *,
    recipient: str = RECIPIENT,
    event_id: str | None = None,
    message_id: str | None = None,
    domain: str = DOMAIN,
    **extra: Any,
) -> dict[str, Any]:
    """One Mailgun event: at `timestamp` (default now), a random id and message id unless
    given; `extra` keys are set as given (dashed ones with `**{"delivery-status": ...}`)."""
    data: dict[str, Any] = {
        "domain": {"name": domain},
        "envelope": {"sender": f"postmaster@{domain}", "targets": recipient, "transport": "smtp"},
        "event": event,
        "id": event_id or secrets.token_urlsafe(16),
        "timestamp": time.time() if timestamp is None else timestamp,
        "recipient": recipient,
        "recipient-domain": recipient.rsplit("@", 1)[-1],
        "log-level": "error" if event == "failed" else "info",
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "message": {
            "headers": {
                "message-id": message_id or f"{secrets.token_hex(8)}@{domain}",
                "subject": "Hello",
                "from": f"Billing <billing@{domain}>",
                "to": recipient,
            },
            "attachments": [],
            "size": 2048,
        },
        "tags": ["newsletter"],
        "user-variables": {},
    }
    if event == "failed":
        data.update(HARD_BOUNCE)
    data.update(extra)
    return data


def tap_record(
    event: str = "delivered",
    timestamp: float | None = None,
    *,
    domain: str = DOMAIN,
    **kwargs: Any,
) -> dict[str, Any]:
    """The same event as tap-mailgun emits it in the `events` stream (snake_case keys, ISO
    `timestamp`, the domain as a string); arguments as for `mailgun_event`."""
    return event_record(mailgun_event(event, timestamp, domain=domain, **kwargs), domain)
