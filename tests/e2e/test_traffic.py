"""The traffic generator: deterministic, cut-stable, consistent per message, Mailgun-shaped."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from fakes.mailgun import FakeMailgun
from fakes.traffic import Traffic, TrafficSpec, load
from tap_mailgun.records import event_record

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
ENGAGEMENT = {"opened", "clicked", "complained", "unsubscribed"}


def small(**changes: Any) -> TrafficSpec:
    """A week of a small business: fast, yet every kind of event shows up."""
    spec = {"start": START, "days": 7.0, "messages": 1500, "recipients": 120, **changes}
    return TrafficSpec(**spec)


def events_of(spec: TrafficSpec) -> tuple[list[tuple[str, dict[str, Any]]], Traffic]:
    traffic = Traffic(spec)
    return list(traffic.events()), traffic


def test_the_same_spec_gives_the_same_traffic_and_another_seed_does_not() -> None:
    first, _ = events_of(small())
    again, _ = events_of(small())
    other, _ = events_of(small(seed=7))
    assert [e["id"] for _, e in first] == [e["id"] for _, e in again]
    assert first == again
    assert [e["id"] for _, e in first] != [e["id"] for _, e in other]


def test_every_kind_of_event_appears_and_ids_are_unique() -> None:
    events, traffic = events_of(small())
    kinds = {e["event"] for _, e in events}
    assert kinds == {"accepted", "delivered", "failed", "opened", "clicked", "complained"} | {
        "unsubscribed"
    }
    failures = {(e["severity"], e["reason"]) for _, e in events if e["event"] == "failed"}
    assert ("temporary", "generic") in failures
    assert ("permanent", "bounce") in failures
    assert len({e["id"] for _, e in events}) == len(events)
    assert sum(traffic.event_counts.values()) == len(events)
    assert {domain for domain, _ in events} == set(small().domains)


def test_a_cut_keeps_everything_before_it_unchanged() -> None:
    cut = START + timedelta(days=3, hours=5)  # whole seconds: created_at is floored to seconds
    whole, traffic = events_of(small())
    part, cut_traffic = events_of(small(until=cut))
    before = [(d, e) for d, e in whole if e["timestamp"] < cut.timestamp()]
    assert part == before
    assert 0 < len(part) < len(whole)
    for key, items in traffic.suppressions.items():
        kept = {a for a, i in items.items() if parsedate_to_datetime(i["created_at"]) < cut}
        assert set(cut_traffic.suppressions.get(key, {})) == kept


def test_each_message_lives_a_consistent_life() -> None:
    events, _ = events_of(small())
    lives: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, event in events:
        lives[event["message"]["headers"]["message-id"]].append(event)
    # Mail sent in the window's last day may still be retried past its end: leave it out.
    settled = (small().end - timedelta(days=1)).timestamp()
    for life in (life for life in lives.values() if life[0]["timestamp"] < settled):
        stamps = [e["timestamp"] for e in life]
        assert stamps == sorted(stamps)
        assert life[0]["event"] == "accepted"
        assert len({e["recipient"] for e in life}) == 1
        kinds = [e["event"] for e in life]
        final = [e for e in life if e["event"] == "delivered" or e.get("severity") == "permanent"]
        assert len(final) == 1, kinds
        if final[0]["event"] != "delivered":
            assert not ENGAGEMENT & set(kinds)
        engaged = [e for e in life if e["event"] in ENGAGEMENT]
        assert all(e["timestamp"] > final[0]["timestamp"] for e in engaged)
        assert not (("complained" in kinds) and ("unsubscribed" in kinds))


def test_suppressions_follow_events_and_stop_later_mail() -> None:
    events, traffic = events_of(small())
    by_reason = {"bounce": "bounces", "complained": "complaints", "unsubscribed": "unsubscribes"}
    causes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for domain, e in events:
        kind = by_reason.get(e.get("reason", e["event"]))
        if kind and (e["event"] != "failed" or e["severity"] == "permanent"):
            causes[(domain, kind)].add(e["recipient"])
    assert {k: set(v) for k, v in traffic.suppressions.items()} == dict(causes)
    for (_, kind), items in traffic.suppressions.items():
        for address, item in items.items():
            assert item["address"] == address
            assert item["created_at"].endswith(" UTC")
            if kind == "bounces":
                assert item["code"].startswith("5") and item["error"]
            if kind == "unsubscribes":
                assert item["tags"]
    # Mailgun drops later mail to a suppressed address, saying why.
    dropped = [(d, e) for d, e in events if e.get("reason", "").startswith("suppress-")]
    assert dropped
    for domain, e in dropped:
        kind = {"suppress-bounce": "bounces", "suppress-complaint": "complaints"}.get(
            e["reason"], "unsubscribes"
        )
        item = traffic.suppressions[(domain, kind)][e["recipient"]]
        assert parsedate_to_datetime(item["created_at"]).timestamp() <= e["timestamp"]


def test_events_have_mailguns_raw_shape_and_become_records() -> None:
    events, _ = events_of(small(messages=300))
    for domain, raw in events:
        assert isinstance(raw["timestamp"], float)
        assert raw["recipient-domain"] == raw["recipient"].split("@")[1]
        assert raw["message"]["headers"]["message-id"].endswith("@" + domain)
        assert "user-variables" in raw and raw["tags"]
        if raw["event"] in ("delivered", "failed"):
            assert {"delivery-status", "envelope"} <= set(raw)
        if raw["event"] == "clicked":
            assert raw["url"].startswith("https://")
        record = event_record(raw, domain)
        assert record["domain"] == domain
        assert "recipient_domain" in record and "user_variables" in record
        if raw["event"] == "failed":
            assert isinstance(record["delivery_status"]["code"], int)
            assert record["delivery_status"]["attempt_no"] >= 1


def test_size_follows_the_spec() -> None:
    events, traffic = events_of(TrafficSpec.for_events(20_000, start=START, recipients=2000))
    assert 17_000 <= len(events) <= 23_000, len(events)
    assert len(traffic.recipients) == len({r.address for r in traffic.recipients}) == 2000


def test_mailing_lists_hold_named_real_people() -> None:
    traffic = Traffic(small())
    lists = traffic.mailing_lists()
    assert [m.address for m in lists] == ["customers@mg.example.com", "newsletter@news.example.org"]
    invalid = {r.address for r in traffic.recipients if r.habit == "invalid"}
    for mailing_list in lists:
        assert mailing_list.members
        assert any(not m["subscribed"] for m in mailing_list.members)
        for member in mailing_list.members:
            assert member["address"] not in invalid
            assert member["name"] == f"{member['vars']['first_name']} {member['vars']['last_name']}"


def test_load_serves_the_traffic_through_the_fake_api() -> None:
    traffic = Traffic(small(messages=400))
    with FakeMailgun() as fake:
        counts = load(fake, traffic)
        auth = ("api", "key-test")
        served = 0
        for domain in traffic.spec.domains:
            url: str | None = f"{fake.base_url}/v3/{domain}/events?limit=300&ascending=yes"
            while url:
                page = requests.get(url, auth=auth, timeout=10).json()
                served += len(page["items"])
                url = page["paging"]["next"] if page["items"] else None
            bounces = requests.get(
                f"{fake.base_url}/v3/{domain}/bounces?limit=1000", auth=auth, timeout=10
            )
            assert len(bounces.json()["items"]) == len(traffic.suppressions[(domain, "bounces")])
        assert served == counts["events"] == sum(traffic.event_counts.values())
        assert counts["lists"] == 2 and counts["tags"] == 5
        assert fake.violations == []
