"""Webhook calls shaped like Mailgun's (JSON `signature` + `event-data`), for tests and bench.

The event-data is an event from `fakes.events.mailgun_event`, which follows Mailgun's
published webhook payloads; here it is signed and wrapped.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from mailgun_webhooks.verify import sign

SIGNING_KEY = "whsk-test-0123456789abcdef"  # the tests' webhook signing key


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
