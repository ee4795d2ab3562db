"""Turning Mailgun payloads into records: one place for key names and timestamps.

The polled `events` stream (from the Events API or the Logs API) and the webhook-captured
`webhook_events` stream all use `event_record`, so an event has exactly one shape whichever
way it arrived.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any


def snake_key(key: str) -> str:
    """Mailgun's dashed keys in snake_case: `delivery-status` becomes `delivery_status`."""
    return key.replace("-", "_")


def snake_keys(value: Any) -> Any:
    """Recursively rename dict keys to snake_case; nesting and values stay as they are."""
    # The tap's hot path (every key of every event): JSON scalars, most values, are kept
    # without a call; anything else (containers, subclasses) goes through here again.
    kind = type(value)
    if kind is dict:
        return {
            (k.replace("-", "_") if "-" in k else k): (v if type(v) in _SCALARS else snake_keys(v))
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _SCALARS else snake_keys(v) for v in value]
    if isinstance(value, dict):
        return {snake_key(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


_SCALARS = frozenset((str, int, float, bool, type(None)))


def epoch_to_iso(epoch: float) -> str:
    """Epoch seconds as UTC ISO-8601 with microseconds, e.g. 2026-11-01T12:00:00.123456+00:00."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="microseconds")


def rfc2822_to_iso(value: str) -> str:
    """Mailgun's RFC 2822 dates (`Fri, 21 Oct 2011 11:02:55 UTC`) as UTC ISO-8601."""
    parsed = parsedate_to_datetime(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")


def event_record(item: dict[str, Any], domain: str | None = None) -> dict[str, Any]:
    """One Mailgun event as a record: snake_case keys, `domain`, ISO `timestamp`, raw epoch.

    `item` is an Events API or webhook event (float `timestamp`) or a Logs API item, which
    differs in three ways made alike here: `@timestamp` is ISO-8601 with milliseconds,
    `user-variables` is a JSON string, and the domain is only in `domain.name` (also the
    default of `domain` for the others).
    """
    record: dict[str, Any] = snake_keys(item)
    if "@timestamp" in item:
        epoch = datetime.fromisoformat(str(item["@timestamp"]).replace("Z", "+00:00")).timestamp()
        del record["@timestamp"]
        if isinstance(item.get("user-variables"), str):
            record["user_variables"] = _json_object(item["user-variables"])
    else:
        epoch = float(item["timestamp"])
    record["timestamp_epoch"] = epoch
    record["timestamp"] = epoch_to_iso(epoch)
    record["domain"] = domain or str((item.get("domain") or {}).get("name", ""))
    return record


def _json_object(text: str) -> Any:
    """The user variables the Logs API sends as a JSON string, as the object the Events API
    sends (keys in snake_case the same way); a string that is no JSON object stays as is."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return text
    return snake_keys(value) if isinstance(value, dict) else text


# What each DNS record Mailgun checks is for, in the words of its dashboard.
DNS_CHECKS = ("spf", "dkim", "mx", "tracking_cname")
_DNS_STATES = ("valid", "invalid", "unknown")


def dns_check(record: dict[str, Any]) -> str | None:
    """Which check a DNS record of GET /v4/domains/{name} is: spf, dkim, mx, tracking_cname."""
    kind = str(record.get("record_type", "")).upper()
    if kind == "MX":
        return "mx"
    if kind == "CNAME":
        return "tracking_cname"
    if kind == "TXT" and "._domainkey." in str(record.get("name", "")):
        return "dkim"
    if kind == "TXT" and str(record.get("value", "")).startswith("v=spf1"):
        return "spf"
    return None


def dns_states(details: dict[str, Any]) -> dict[str, str]:
    """Each check's state from a domain's details: `valid` when every record of it is valid,
    `invalid` when any is, else `unknown` (also when Mailgun lists none)."""
    found: dict[str, list[str]] = {check: [] for check in DNS_CHECKS}
    records = [
        *(details.get("sending_dns_records") or []),
        *(details.get("receiving_dns_records") or []),
    ]
    for record in records:
        check = dns_check(record or {})
        if check:
            state = str(record.get("valid", "unknown")).lower()
            found[check].append(state if state in _DNS_STATES else "unknown")
    return {
        check: "invalid"
        if "invalid" in states
        else ("valid" if states and set(states) == {"valid"} else "unknown")
        for check, states in found.items()
    }
