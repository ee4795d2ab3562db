"""An event's identity: the same Mailgun event by webhook, Events API (microseconds) or Logs
API (milliseconds) is one event, and a store written with microseconds is converted once.
(All three paths through the real console scripts: tests/webhooks/test_end_to_end.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fakes.events import mailgun_event
from fakes.mailgun import log_event
from tap_mailgun.records import event_record
from target_brevo import rules
from target_brevo.store import IDENTITY_META, EngagementStore, events_table
from tests.target.conftest import at

if TYPE_CHECKING:
    from typing import Any


def test_the_identity_is_the_id_and_the_millisecond() -> None:
    assert rules.event_identity("e1", "2026-11-01T12:00:00.123987+00:00") == (
        "e1",
        "2026-11-01T12:00:00.123000+00:00",
    )
    assert rules.event_identity("e1", "2026-11-01T12:00:00.123000+00:00")[1].endswith(
        ".123000+00:00"
    )


def _both_precisions(event_id: str, epoch: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """One event as the Events API (or a webhook) gives it and as the Logs API does."""
    event = mailgun_event("opened", epoch, event_id=event_id, recipient="ann@example.com")
    return event_record(event), event_record(log_event(event, str(event["domain"]["name"])))


def _facts(record: dict[str, Any]) -> rules.EventFacts:
    found = rules.event_facts(record, rules.DEFAULT_EVENT_NAMES)
    assert isinstance(found, rules.EventFacts), found
    return found


def test_one_event_at_two_precisions_is_applied_once(store: EngagementStore) -> None:
    polled, logged = _both_precisions("e1", at(0.123987))
    assert polled["timestamp"] != logged["timestamp"]

    assert store.apply_events([_facts(polled)]) == 1
    assert store.apply_events([_facts(logged)]) == 0
    # Same id in another millisecond (another day's id, reused): another event.
    later, _ = _both_precisions("e1", at(86400.5))
    assert store.apply_events([_facts(later)]) == 1


def test_a_store_written_with_microseconds_is_converted_once(store: EngagementStore) -> None:
    # As an older target wrote them: the full microseconds; the first two are one event seen
    # twice at different precisions (a webhook and the Logs API), the third another event.
    old = [
        ("e1", "2026-11-01T12:00:00.123987+00:00"),
        ("e1", "2026-11-01T12:00:00.123000+00:00"),
        ("e2", "2026-11-01T12:00:01.000500+00:00"),
    ]
    rows = [{"id": i, "timestamp": t, "pending": False, "payload": None} for i, t in old]
    store.conn.execute(events_table.insert(), rows)

    assert store.use_millisecond_identities() == 2
    assert store.get_meta(IDENTITY_META) == "millisecond"
    stored = sorted(store.conn.execute(events_table.select().with_only_columns(
        events_table.c.id, events_table.c.timestamp
    )).all())  # fmt: skip
    assert stored == [
        ("e1", "2026-11-01T12:00:00.123000+00:00"),
        ("e2", "2026-11-01T12:00:01.000000+00:00"),
    ]
    assert store.use_millisecond_identities() == 0  # once
    # The Logs API's copy of e2 is known now.
    e2 = _facts(event_record(log_event(mailgun_event("opened", 1793534401.0005, event_id="e2"),
                                       "mg.example.com")))  # fmt: skip
    assert e2.key == ("e2", "2026-11-01T12:00:01.000000+00:00")
    assert store.apply_events([e2]) == 0
