"""The events stream from the Events API (`event_source: events`) against the fake Mailgun:
window, paging, precision, resume, late events. The Logs API source: test_logs.py."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun
from tap_mailgun.streams import DEFAULT_EVENT_LAG_MINUTES, DEFAULT_METRICS_LOOKBACK_DAYS
from tap_mailgun.tap import TapMailgun
from tap_mailgun.webhook_events import DEFAULT_RETENTION_DAYS
from tests.tap.conftest import API_KEY, DOMAIN, OTHER_DOMAIN, hours_ago, run_tap
from tests.tap.conftest import tap_config as any_source_config


def tap_config(fake: FakeMailgun, **overrides: Any) -> dict[str, Any]:
    """A config reading events from the Events API."""
    return any_source_config(fake, **{"event_source": "events", **overrides})


def load(fake: FakeMailgun, domain: str, count: int, start_hours: float, step_s: float = 1.0):
    """`count` delivered events of `domain`, one every `step_s` seconds from `start_hours` ago."""
    events = [
        mailgun_event("delivered", hours_ago(start_hours) + i * step_s, recipient=f"u{i}@{domain}")
        for i in range(count)
    ]
    fake.add_events(domain, events)
    return events


def first_page_calls(fake: FakeMailgun, domain: str):
    return fake.calls("GET", rf"^/v3/{domain}/events$")


def test_window_ends_event_lag_minutes_ago(mailgun: FakeMailgun) -> None:
    old = load(mailgun, DOMAIN, 3, start_hours=2)
    recent = mailgun_event("delivered", time.time() - 10 * 60, recipient="late@x.com")
    mailgun.add_events(DOMAIN, [recent])

    before = time.time()
    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events")

    assert [r["id"] for r in run.records["events"]] == [e["id"] for e in old]
    (call,) = first_page_calls(mailgun, DOMAIN)
    end = float(call.query["end"][0])
    assert before - 30 * 60 - 1 < end < time.time() - 30 * 60 + 1
    assert call.query["ascending"] == ["yes"]
    assert call.query["limit"] == ["300"]


def test_follows_opaque_next_links_verbatim_until_an_empty_page(mailgun: FakeMailgun) -> None:
    events = load(mailgun, DOMAIN, 700, start_hours=3)

    run = run_tap(tap_config(mailgun, domains=[DOMAIN], event_types=["delivered"]), "events")

    assert [r["id"] for r in run.records["events"]] == [e["id"] for e in events]
    pages = mailgun.calls("GET", rf"^/v3/{DOMAIN}/events/")
    # 300 + 300 + 100, then the empty page that ends the traversal.
    assert len(first_page_calls(mailgun, DOMAIN)) == 1
    assert len(pages) == 3
    assert all(p.query == {} for p in pages), "a next link is followed as given"
    assert [p.status for p in pages] == [200, 200, 200]


def test_later_pages_keep_the_filter(mailgun: FakeMailgun) -> None:
    mixed = [
        mailgun_event(kind, hours_ago(2) + i, recipient=f"u{i}@x.com")
        for i, kind in enumerate(["delivered", "opened", "failed", "clicked"] * 200)
    ]
    mailgun.add_events(DOMAIN, mixed)

    config = tap_config(mailgun, domains=[DOMAIN], event_types=["failed", "opened"])
    run = run_tap(config, "events")

    (call,) = first_page_calls(mailgun, DOMAIN)
    assert call.query["event"] == ["failed OR opened"]
    emitted = run.records["events"]
    assert len(emitted) == 400
    assert {r["event"] for r in emitted} == {"failed", "opened"}


def test_records_keep_full_timestamp_precision_and_snake_case(mailgun: FakeMailgun) -> None:
    stamp = hours_ago(2) // 1 + 0.123456
    event = mailgun_event(
        "failed",
        stamp,
        severity="permanent",
        delivery_status={"code": "5.1.1", "message": "no such user", "attempt-no": 1},
    )
    mailgun.add_events(DOMAIN, [event])

    (record,) = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events").records["events"]

    assert record["timestamp_epoch"] == stamp
    assert datetime.fromisoformat(record["timestamp"]).timestamp() == stamp
    assert record["timestamp"].endswith(".123456+00:00")
    assert record["domain"] == DOMAIN
    assert record["delivery_status"] == {
        "code": "5.1.1",
        "message": "no such user",
        "attempt_no": 1,
    }
    assert record["message"]["headers"]["message_id"] == event["message"]["headers"]["message-id"]
    assert "log_level" in record and "log-level" not in record


def test_resumes_each_domain_from_its_own_bookmark(mailgun: FakeMailgun) -> None:
    first_a = load(mailgun, DOMAIN, 5, start_hours=5)
    first_b = load(mailgun, OTHER_DOMAIN, 5, start_hours=4)
    config = tap_config(mailgun)
    run1 = run_tap(config, "events")
    assert len(run1.records["events"]) == 10

    new_a = load(mailgun, DOMAIN, 3, start_hours=3)
    run2 = run_tap(config, "events", state=run1.state)

    begins = {
        domain: float(first_page_calls(mailgun, domain)[-1].query["begin"][0])
        for domain in (DOMAIN, OTHER_DOMAIN)
    }
    assert abs(begins[DOMAIN] - first_a[-1]["timestamp"]) < 1e-5
    assert abs(begins[OTHER_DOMAIN] - first_b[-1]["timestamp"]) < 1e-5
    ids = [r["id"] for r in run2.records["events"]]
    # The boundary event of each domain is read again (the target dedups on id + timestamp);
    # nothing older is, and every new event is.
    assert set(ids) == {first_a[-1]["id"], first_b[-1]["id"]} | {e["id"] for e in new_a}


def test_an_interrupted_run_loses_no_event(mailgun: FakeMailgun) -> None:
    events_a = load(mailgun, DOMAIN, 650, start_hours=6)
    events_b = load(mailgun, OTHER_DOMAIN, 20, start_hours=6)
    # Page 2 of the first domain fails for good: the run stops reading that domain there.
    mailgun.fail_next(rf"GET /v3/{DOMAIN}/events/", 503, times=3)
    config = tap_config(mailgun, max_retries=2)

    run1 = run_tap(config, "events")

    emitted = [r for r in run1.records["events"] if r["domain"] == DOMAIN]
    assert [r["id"] for r in emitted] == [e["id"] for e in events_a[:300]]
    assert len([r for r in run1.records["events"] if r["domain"] == OTHER_DOMAIN]) == 20
    assert run1.failures and DOMAIN in run1.failures[0]
    bookmark = next(
        p
        for p in run1.state["bookmarks"]["events"]["partitions"]
        if p["context"] == {"domain": DOMAIN}
    )
    assert bookmark["replication_key_value"] == emitted[-1]["timestamp"]

    run2 = run_tap(config, "events", state=run1.state)

    seen = {r["id"] for r in run1.records["events"] + run2.records["events"]}
    assert seen == {e["id"] for e in events_a + events_b}
    assert not run2.failures


def test_every_state_message_covers_only_emitted_events(mailgun: FakeMailgun) -> None:
    load(mailgun, DOMAIN, 40, start_hours=3)
    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events")
    newest = ""
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "events":
            newest = max(newest, message["record"]["timestamp"])
        if message["type"] == "STATE":
            for part in message["value"]["bookmarks"].get("events", {}).get("partitions", []):
                assert part.get("replication_key_value", "") <= newest


def test_late_events_are_read_by_the_next_run(mailgun: FakeMailgun) -> None:
    load(mailgun, DOMAIN, 5, start_hours=2)
    recent = load(mailgun, DOMAIN, 5, start_hours=0.1, step_s=60)  # 6 to 2 minutes ago
    late = mailgun_event("opened", time.time() - 8 * 60, recipient="late@x.com")

    run1 = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events")
    assert len(run1.records["events"]) == 5  # the last half hour is left for later
    mailgun.add_events(DOMAIN, [late])  # stored 8 minutes late, behind newer events

    # Time passes: 25 minutes later, the lag window of 30 minutes sits 5 minutes ago.
    run2 = run_tap(
        tap_config(mailgun, domains=[DOMAIN], event_lag_minutes=1), "events", state=run1.state
    )
    ids = {r["id"] for r in run2.records["events"]}
    assert late["id"] in ids
    assert {e["id"] for e in recent} <= ids


def test_without_the_lag_a_late_event_is_lost(mailgun: FakeMailgun) -> None:
    """The fake is faithful: a traversal that passed a position never sees what is stored there
    later. This is the behaviour event_lag_minutes exists for."""
    load(mailgun, DOMAIN, 5, start_hours=0.1, step_s=60)
    late = mailgun_event("opened", time.time() - 8 * 60, recipient="late@x.com")
    config = tap_config(mailgun, domains=[DOMAIN], event_lag_minutes=0)

    run1 = run_tap(config, "events")
    mailgun.add_events(DOMAIN, [late])
    run2 = run_tap(config, "events", state=run1.state)

    assert late["id"] not in {r["id"] for r in run1.records["events"] + run2.records["events"]}


def test_stops_on_a_missing_or_repeated_next_link(mailgun: FakeMailgun) -> None:
    item = mailgun_event("delivered", hours_ago(2))
    link = f"{mailgun.base_url}/v3/{DOMAIN}/events/c2FtZQ"
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/events$", 200, body={"items": [item], "paging": {"next": link}}
    )
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/events/c2FtZQ$", 200, body={"items": [item], "paging": {"next": link}}
    )
    mailgun.fail_next(rf"GET /v3/{OTHER_DOMAIN}/events$", 200, body={"items": [item]})

    run = run_tap(tap_config(mailgun), "events")

    assert len(mailgun.calls("GET", rf"^/v3/{DOMAIN}/events")) == 2
    assert len(mailgun.calls("GET", rf"^/v3/{OTHER_DOMAIN}/events")) == 1
    assert len(run.records["events"]) == 3
    assert not run.failures


def test_never_follows_a_link_to_another_host(mailgun: FakeMailgun) -> None:
    item = mailgun_event("delivered", hours_ago(2))
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/events$",
        200,
        body={"items": [item], "paging": {"next": "http://attacker.invalid/v3/x/events/t"}},
    )

    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events")

    assert len(run.records["events"]) == 1
    assert "another host" in run.failures[0]


def test_resuming_drops_boundary_events_below_the_bookmark(mailgun: FakeMailgun) -> None:
    """The window starts a microsecond before the bookmark, so events stored up to 1 µs
    before it come again; emitting them would break the ascending order the SDK checks
    (the run crashes and the bookmark never moves again). They were emitted: drop them."""
    whole = float(int(hours_ago(2)))
    # One microsecond apart, and sub-microsecond floats either side of a rounding boundary:
    # .0000004 rounds down to .000000, .0000006 and .0000014 round to .000001.
    stamps = [whole - 0.000001, whole + 0.0000004, whole + 0.0000006, whole + 0.0000014]
    events = [mailgun_event("delivered", s, event_id=f"e{i}") for i, s in enumerate(stamps)]
    mailgun.add_events(DOMAIN, events)
    config = tap_config(mailgun, domains=[DOMAIN])

    run1 = run_tap(config, "events")
    assert [r["id"] for r in run1.records["events"]] == ["e0", "e1", "e2", "e3"]
    (part,) = run1.state["bookmarks"]["events"]["partitions"]
    bookmark = part["replication_key_value"]

    newer = mailgun_event("opened", whole + 1, event_id="e4")
    mailgun.add_events(DOMAIN, [newer])
    run2 = run_tap(config, "events", state=run1.state)

    emitted = run2.records["events"]
    # Only the events at the bookmark itself come again (the target dedups), and the new one.
    assert [r["id"] for r in emitted] == ["e2", "e3", "e4"]
    assert all(r["timestamp"] >= bookmark for r in emitted)
    (part2,) = run2.state["bookmarks"]["events"]["partitions"]
    assert part2["replication_key_value"] == emitted[-1]["timestamp"] > bookmark
    assert not run2.failures


def test_the_fake_refuses_more_than_300_events_a_page_without_the_spec_too() -> None:
    """The tap's page size is the API's maximum; the fake enforces it like Mailgun, even
    where the spec is not checked (the sandbox, the benchmarks)."""
    with FakeMailgun(api_key=API_KEY, validate=False) as fake:
        fake.add_domain(DOMAIN)
        url = f"{fake.base_url}/v3/{DOMAIN}/events"
        statuses = [
            requests.get(url, params={"limit": n}, auth=("api", API_KEY), timeout=5).status_code
            for n in (300, 301)
        ]
    assert statuses == [200, 400]


def test_settings_defaults_are_the_code_defaults() -> None:
    """One default per setting: the settings schema shows the constants the code falls back to."""
    properties = TapMailgun.config_jsonschema["properties"]
    assert properties["event_lag_minutes"]["default"] == DEFAULT_EVENT_LAG_MINUTES
    assert properties["webhook_retention_days"]["default"] == DEFAULT_RETENTION_DAYS
    assert properties["metrics_lookback_days"]["default"] == DEFAULT_METRICS_LOOKBACK_DAYS


def test_an_empty_next_link_ends_the_listing(mailgun: FakeMailgun) -> None:
    item = mailgun_event("delivered", hours_ago(2))
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/events$", 200, body={"items": [item], "paging": {"next": ""}}
    )

    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "events")

    assert [r["id"] for r in run.records["events"]] == [item["id"]]
    assert len(mailgun.calls("GET", rf"^/v3/{DOMAIN}/")) == 1
    assert not run.failures


def test_interleaved_domains_keep_their_own_bookmarks_through_an_interruption(
    mailgun: FakeMailgun,
) -> None:
    """Two domains' events alternate in time; one domain's read stops early. Each domain
    resumes from its own last emitted event: the other domain's later bookmark skips nothing."""
    start = hours_ago(6)
    a = [mailgun_event("delivered", start + 2 * i, event_id=f"a{i}") for i in range(400)]
    b = [mailgun_event("opened", start + 2 * i + 1, event_id=f"b{i}") for i in range(400)]
    mailgun.add_events(DOMAIN, a)
    mailgun.add_events(OTHER_DOMAIN, b)
    mailgun.fail_next(rf"GET /v3/{OTHER_DOMAIN}/events/", 503, times=3)  # b's page 2
    config = tap_config(mailgun, max_retries=2)

    run1 = run_tap(config, "events")
    marks = {
        p["context"]["domain"]: p["replication_key_value"]
        for p in run1.state["bookmarks"]["events"]["partitions"]
    }
    emitted1 = {d: [r for r in run1.records["events"] if r["domain"] == d] for d in marks}
    assert len(emitted1[DOMAIN]) == 400 and len(emitted1[OTHER_DOMAIN]) == 300
    assert marks[DOMAIN] == emitted1[DOMAIN][-1]["timestamp"]
    assert marks[OTHER_DOMAIN] == emitted1[OTHER_DOMAIN][-1]["timestamp"] < marks[DOMAIN]

    late_a = [mailgun_event("clicked", start + 2 * i + 0.5, event_id=f"a+{i}") for i in (500, 600)]
    late_b = [mailgun_event("clicked", start + 2 * i + 1.5, event_id=f"b+{i}") for i in (500, 600)]
    mailgun.add_events(DOMAIN, late_a)
    mailgun.add_events(OTHER_DOMAIN, late_b)
    run2 = run_tap(config, "events", state=run1.state)

    seen = {r["id"] for r in run1.records["events"] + run2.records["events"]}
    assert seen == {e["id"] for e in a + b + late_a + late_b}
    for record in run2.records["events"]:  # nothing before its own domain's bookmark again
        assert record["timestamp"] >= marks[record["domain"]]
    assert not run2.failures
