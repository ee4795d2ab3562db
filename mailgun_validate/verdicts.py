"""What the mapper decides, as plain functions over plain data (no I/O).

- which address a record carries (`address_of`, per stream, from `address_fields`);
- what of Mailgun's answer a record carries (`verdict_of`: the six fields, plus when);
- whether a cached verdict is still fresh (`is_fresh`, `validation_ttl_days`);
- the schema a validated stream gets (`with_validation`).
"""

from __future__ import annotations

from typing import Any

# Streams of tap-mailgun that name a person, and the property that holds the address.
DEFAULT_ADDRESS_FIELDS: dict[str, str] = {
    "events": "recipient",
    "webhook_events": "recipient",
    "bounces": "address",
    "complaints": "address",
    "unsubscribes": "address",
    "list_members": "address",
}
VERDICT_FIELDS = (
    "result",
    "risk",
    "reason",
    "did_you_mean",
    "is_disposable_address",
    "is_role_address",
)
# Mailgun's results: the two that mean "never mail this address" are `undeliverable` and
# `do_not_send`; `catch_all` and `unknown` cannot be told apart from good ones by a probe.
RESULTS = ("deliverable", "undeliverable", "do_not_send", "catch_all", "unknown")
DAY_SECONDS = 86400.0

VALIDATION_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "Mailgun's verdict on the address (GET /v4/address/validate); null when "
    "not validated in this run (budget spent, dry run or Mailgun unavailable).",
    "properties": {
        "result": {"type": ["string", "null"], "enum": [*RESULTS, None]},
        "risk": {"type": ["string", "null"]},
        "reason": {"type": ["array", "null"], "items": {"type": "string"}},
        "did_you_mean": {"type": ["string", "null"]},
        "is_disposable_address": {"type": ["boolean", "null"]},
        "is_role_address": {"type": ["boolean", "null"]},
        "validated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def normalize(address: str) -> str:
    """The form an address is cached and counted under: trimmed, lower case."""
    return address.strip().lower()


def address_of(record: dict[str, Any], field: str | None) -> str | None:
    """The address a record carries in `field`, normalized; None when it carries none."""
    if field is None:
        return None
    value = record.get(field)
    if not isinstance(value, str) or "@" not in value:
        return None
    return normalize(value)


def verdict_of(answer: dict[str, Any], validated_at: str) -> dict[str, Any]:
    """The verdict a record carries, from Mailgun's answer: the six fields and when."""
    verdict = {name: answer.get(name) for name in VERDICT_FIELDS}
    if verdict["result"] not in RESULTS:
        verdict["result"] = "unknown"  # a result Mailgun adds later is nothing to act on
    verdict["validated_at"] = validated_at
    return verdict


def is_fresh(validated_epoch: float, now_epoch: float, ttl_days: float) -> bool:
    """Whether a verdict from `validated_epoch` may still be used: younger than the TTL."""
    return now_epoch - validated_epoch < ttl_days * DAY_SECONDS


def with_validation(schema: dict[str, Any]) -> dict[str, Any]:
    """A stream's schema with the `validation` property added (the input is not changed)."""
    properties = {**(schema.get("properties") or {}), "validation": VALIDATION_SCHEMA}
    return {**schema, "properties": properties}
