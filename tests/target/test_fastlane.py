"""target-brevo as the fast lane (`fast_lane`) beside the 15-minute job, and the run lock's wait.

The fast lane applies only what suppresses a contact and leaves the rest, unapplied, to the
15-minute job reading the same events; a run that finds the store held waits up to
`run_lock_wait_seconds`, then fails (the 15-minute job) or skips cleanly (the fast lane).
Through the real console script against the fake Brevo.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from fakes.events import tap_record
from target_brevo import rules
from target_brevo.store import EngagementStore, store_url
from tests.target.conftest import at, on_both_stores, singer_lines
from tests.target.test_resilience import sent_ids

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo
    from tests.target.conftest import TargetRunner

FAST_LANE = {"fast_lane": True, "run_lock_wait_seconds": 1}


def mixed_events() -> list[dict[str, Any]]:
    """One event of each kind, each for its own contact; ids say what they are."""
    failed = {"severity": "permanent", "reason": "bounce"}
    return [
        tap_record("delivered", at(0), event_id="delivered", recipient="d@example.com"),
        tap_record("opened", at(1), event_id="opened", recipient="o@example.com"),
        tap_record("failed", at(2), event_id="hard", recipient="h@example.com", **failed),
        tap_record(
            "failed",
            at(3),
            event_id="soft",
            recipient="s@example.com",
            severity="temporary",
            reason="generic",
        ),
        tap_record(
            "failed",
            at(4),
            event_id="declined",
            recipient="x@example.com",
            severity="permanent",
            reason="suppress-complaint",
        ),
        tap_record("complained", at(5), event_id="complained", recipient="c@example.com"),
        tap_record("unsubscribed", at(6), event_id="unsubscribed", recipient="u@example.com"),
    ]


SUPPRESSING = {"hard", "declined", "complained", "unsubscribed"}
SUPPRESSED_PEOPLE = {"h@example.com", "x@example.com", "c@example.com", "u@example.com"}


def test_which_events_suppress_their_contact() -> None:
    facts = [rules.event_facts(record, rules.DEFAULT_EVENT_NAMES) for record in mixed_events()]
    assert {f.key[0] for f in facts if isinstance(f, rules.EventFacts) and rules.suppresses(f)} == (
        SUPPRESSING
    )
    assert all(isinstance(f, rules.EventFacts) for f in facts)


@on_both_stores
def test_the_fast_lane_applies_suppressions_only_and_the_full_run_the_rest_once(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines({"webhook_events": mixed_events()})
    fast = target.run(lines, **FAST_LANE)
    assert fast.returncode == 0, fast.stderr
    assert fast.states and all(s == {"bookmarks": {"run": 1}} for s in fast.states)
    blocked = {email for email, c in brevo.contacts.items() if c["emailBlacklisted"]}
    assert set(brevo.contacts) == blocked == SUPPRESSED_PEOPLE
    assert set(sent_ids(brevo)) == SUPPRESSING
    assert fast.summary["events_left_for_full_run"] == 3
    # Import confirmations are left to the 15-minute job (GET /processes: 100 an hour).
    assert not brevo.calls("GET", r"^/v3/processes")

    full = target.run(lines)  # the 15-minute job reads the same events with its own state
    assert full.returncode == 0, full.stderr
    assert full.summary["duplicates_ignored"] == len(SUPPRESSING)
    assert full.summary["events_left_for_full_run"] == 0
    assert brevo.calls("GET", r"^/v3/processes")  # it confirmed the fast lane's import
    assert sent_ids(brevo) == Counter({r["id"]: 1 for r in mixed_events()})  # each once
    assert set(brevo.contacts) == {r["recipient"] for r in mixed_events()}
    blocked = {email for email, c in brevo.contacts.items() if c["emailBlacklisted"]}
    assert blocked == SUPPRESSED_PEOPLE


def held_store(engagement_store: str) -> EngagementStore:
    """Another run holding the store (from this process) until the test closes it."""
    store = EngagementStore(store_url(engagement_store))
    store.lock_run()
    return store


@on_both_stores
def test_a_run_waits_for_the_store_a_bounded_time_then_fails_clearly(
    brevo: FakeBrevo, target: TargetRunner, engagement_store: str
) -> None:
    lines = singer_lines({"webhook_events": mixed_events()})
    config, data = target.settings_file(run_lock_wait_seconds=600), target.input_file(lines)
    other = held_store(engagement_store)
    process = target.start(config, data)
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:  # the store is released once the run says it waits
        seen.append(line)
        if "waiting up to 600 s for it (run_lock_wait_seconds)" in line:
            break
    other.close()
    waited = target.finish(process)
    assert waited.returncode == 0, "".join(seen) + waited.stderr
    assert "Took the engagement store after waiting" in waited.stderr
    assert set(sent_ids(brevo)) == {r["id"] for r in mixed_events()}

    other = held_store(engagement_store)
    refused = target.run(lines, run_lock_wait_seconds=1)
    other.close()
    assert refused.returncode == 1
    assert "holds the engagement store" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.states == []


@on_both_stores
def test_the_fast_lane_skips_cleanly_when_the_store_stays_held_and_applies_next_run(
    brevo: FakeBrevo, target: TargetRunner, engagement_store: str
) -> None:
    lines = singer_lines({"webhook_events": mixed_events()})
    other = held_store(engagement_store)
    skipped = target.run(lines, **FAST_LANE)
    other.close()
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.states == []  # the bookmark does not move: the next run reads them again
    said = [line for line in skipped.stderr.splitlines() if "fast lane skipped" in line]
    assert len(said) == 1 and "run_lock_wait_seconds" in said[0]
    assert "ERROR" not in skipped.stderr and "Traceback" not in skipped.stderr
    assert brevo.requests == []

    again = target.run(lines, **FAST_LANE)
    assert again.returncode == 0, again.stderr
    assert again.states and all(s == {"bookmarks": {"run": 1}} for s in again.states)
    assert set(sent_ids(brevo)) == SUPPRESSING
    assert {e for e, c in brevo.contacts.items() if c["emailBlacklisted"]} == SUPPRESSED_PEOPLE


def test_the_fast_lane_applies_what_came_before_each_state_while_its_input_goes_on(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    first, second = mixed_events()[2], mixed_events()[5]  # a hard bounce, a complaint
    lines = singer_lines({"webhook_events": [first]}, {"bookmarks": {"run": 1}})
    process = target.start(target.settings_file(**FAST_LANE))
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("\n".join(lines) + "\n")
    process.stdin.flush()
    # The input is still open, as from a tap following the spool: the STATE is answered once
    # Brevo has the bounce.
    assert json.loads(process.stdout.readline()) == {"bookmarks": {"run": 1}}
    assert brevo.contacts["h@example.com"]["emailBlacklisted"] is True
    record = {"type": "RECORD", "stream": "webhook_events", "record": second}
    state = {"type": "STATE", "value": {"bookmarks": {"run": 2}}}
    process.stdin.write(f"{json.dumps(record)}\n{json.dumps(state)}\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline()) == {"bookmarks": {"run": 2}}
    assert brevo.contacts["c@example.com"]["emailBlacklisted"] is True
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert set(sent_ids(brevo)) == {"hard", "complained"}
