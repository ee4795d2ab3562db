"""What the sandbox's fakes must end up holding after Meltano runs: read from the fakes' own
state, with none of the target's code (shared by the end-to-end tests)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakes.sandbox import Sandbox

# target-brevo's default event names for Mailgun's outcomes (its `event_names` setting).
BREVO_EVENT = {
    "delivered": "email_delivered",
    "opened": "email_opened",
    "clicked": "email_clicked",
    "complained": "email_complained",
    "unsubscribed": "email_unsubscribed",
}


def mailgun_events(box: Sandbox) -> list[dict[str, Any]]:
    """Every event the fake Mailgun serves, all domains."""
    return [event for events in box.mailgun.events.values() for event in events]


def expected_brevo_events(box: Sandbox, withheld: frozenset[str] = frozenset()) -> Counter[str]:
    """The Brevo events, by name, that the fake Mailgun's events must become: once each, but
    none of the `withheld` addresses (validated undeliverable: never created in Brevo)."""
    names: Counter[str] = Counter()
    for event in mailgun_events(box):
        if event["recipient"].lower() in withheld:
            continue
        if event["event"] == "failed" and event["severity"] != "permanent":
            names["email_soft_bounced"] += 1
        elif event["event"] == "failed":
            # Mailgun declining to send to someone who unsubscribed or complained is no bounce.
            declined = event.get("reason") in ("suppress-unsubscribe", "suppress-complaint")
            names["email_suppressed" if declined else "email_hard_bounced"] += 1
        elif event["event"] in BREVO_EVENT:
            names[BREVO_EVENT[event["event"]]] += 1
    return names


def undeliverable(box: Sandbox) -> frozenset[str]:
    """Addresses the fake Mailgun's validation calls undeliverable or do_not_send."""
    return frozenset(
        address
        for address, verdict in box.mailgun.verdicts.items()
        if verdict["result"] in ("undeliverable", "do_not_send")
    )


def suppressed(box: Sandbox, kind: str) -> set[str]:
    """Addresses on one of Mailgun's suppression lists, any domain."""
    return {
        address
        for (_, k), items in box.mailgun.suppressions.items()
        if k == kind
        for address in items
    }


def brevo_events(box: Sandbox) -> Counter[str]:
    """The events Brevo holds, by name."""
    return Counter(event["event_name"] for event in box.brevo.events)
