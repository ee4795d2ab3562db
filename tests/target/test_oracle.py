"""A month of realistic traffic through the console script, checked against a naive oracle.

The oracle below re-derives, from the raw Mailgun traffic and the issue's wording alone, what
every Brevo contact must look like; it shares no code with target_brevo.rules, so a rule
implemented wrongly in both places at once is the only way this test can pass by accident.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from fakes.traffic import Traffic, TrafficSpec
from tap_mailgun.records import event_record, rfc2822_to_iso, snake_keys
from tests.target.conftest import on_both_stores, singer_lines

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo
    from tests.target.conftest import TargetRunner

BREVO_EVENTS = {"delivered", "opened", "clicked", "failed", "complained", "unsubscribed"}


def half_up(value: Decimal, places: str) -> float:
    """Round half-up to `places` (e.g. "0.0001"), as the issue's rounding means."""
    return float(value.quantize(Decimal(places), rounding=ROUND_HALF_UP))


def oracle(traffic: Traffic, raw_events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """email -> (attributes, blocklisted, roles) straight from the issue's definitions."""
    people: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"D": set(), "O": set(), "C": set(), "last": "", "flags": set(), "names": {}}
    )
    for _, raw in raw_events:
        person = people[raw["recipient"].strip().lower()]
        message = raw["message"]["headers"]["message-id"]
        kind = raw["event"]
        if kind in ("delivered", "opened", "clicked"):
            person["D"].add(message)
        if kind in ("opened", "clicked"):
            person[kind[0].upper()].add(message)
            person["flags"].add("engaged")
        if kind == "delivered":
            day = utc_day(raw["timestamp"])
            person["last"] = max(person["last"], day)
        if kind == "failed":
            person["flags"].add(failure_flag(raw))
        if kind in ("complained", "unsubscribed"):
            person["flags"].add(kind)
    flag_of = {"bounces": "hard", "complaints": "complained", "unsubscribes": "unsubscribed"}
    for (_, kind), items in traffic.suppressions.items():
        for address in items:
            people[address.lower()]["flags"].add(flag_of[kind])
    for mailing_list in traffic.mailing_lists():
        for member in mailing_list.members:
            person = people[member["address"].lower()]
            person["names"] = {
                "FIRSTNAME": member["vars"]["first_name"],
                "LASTNAME": member["vars"]["last_name"],
            }
    expected = {}
    for email, p in people.items():
        attributes: dict[str, Any] = dict(p["names"])
        if p["D"]:
            opens = half_up(Decimal(len(p["O"])) / len(p["D"]), "0.0001")
            clicks = half_up(Decimal(len(p["C"])) / len(p["D"]), "0.0001")
            attributes["MG_OPEN_RATE"] = opens
            attributes["MG_CLICK_RATE"] = clicks
            score = 100 * (
                Decimal("0.3") * Decimal(str(opens)) + Decimal("0.7") * Decimal(str(clicks))
            )
            attributes["MG_ENGAGEMENT"] = half_up(score, "0.1")
        if p["last"]:
            attributes["MG_LAST_DELIVERED"] = p["last"]
        flags = p["flags"]
        if "hard" in flags:
            attributes["MG_BOUNCE_TYPE"] = "hard_bounce"
        elif "soft" in flags:
            attributes["MG_BOUNCE_TYPE"] = "soft_bounce"
        if "unsubscribed" in flags:
            attributes["MG_UNSUBSCRIBED"] = True
        blocked = bool(flags & {"hard", "complained", "unsubscribed"})
        roles = {"all"} | {
            role
            for role, flag in (
                ("engaged", "engaged"),
                ("bounced", "hard"),
                ("complained", "complained"),
            )
            if flag in flags
        }
        expected[email] = (attributes, blocked, roles)
    return expected


def failure_flag(raw: dict[str, Any]) -> str:
    """Issue 12: Mailgun declining to send to someone who unsubscribed or complained earlier
    means exactly that, never a bounce; any other permanent failure bounces, a temporary one is
    soft.
    """
    if raw.get("severity") != "permanent":
        return "soft"
    return {"suppress-unsubscribe": "unsubscribed", "suppress-complaint": "complained"}.get(
        raw.get("reason", ""), "hard"
    )


def brevo_event_name(raw: dict[str, Any]) -> str:
    """The default Brevo event name of a Mailgun event the target sends."""
    if raw["event"] != "failed":
        return f"email_{raw['event']}"
    flag = failure_flag(raw)
    return {"soft": "email_soft_bounced", "hard": "email_hard_bounced"}.get(
        flag, "email_suppressed"
    )


def utc_day(epoch: float) -> str:
    """The UTC date of an epoch, YYYY-MM-DD."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d")


def tap_records(
    traffic: Traffic, raw_events: list[tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """What tap-mailgun would emit for this traffic, built with its own record functions."""
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    streams["events"] = [event_record(raw, domain) for domain, raw in raw_events]
    for (domain, kind), items in traffic.suppressions.items():
        for item in items.values():
            record = snake_keys(item)
            record["created_at"] = rfc2822_to_iso(item["created_at"])
            streams[kind].append({**record, "domain": domain})
    for mailing_list in traffic.mailing_lists():
        streams["list_members"].extend(
            {**snake_keys(m), "list_address": mailing_list.address} for m in mailing_list.members
        )
    return streams


@on_both_stores
def test_a_month_of_traffic_lands_in_brevo_exactly_as_the_issue_defines(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    traffic = Traffic(TrafficSpec(messages=400, recipients=80))
    raw_events = list(traffic.events())  # fills traffic.suppressions as it goes
    roles = {role: brevo.add_list(role) for role in ("engaged", "bounced", "complained", "all")}
    run = target.run(singer_lines(tap_records(traffic, raw_events)), lists=roles)
    assert run.returncode == 0, run.stderr
    names = {list_id: role for role, list_id in roles.items()}
    actual = {
        email: (c["attributes"], c["emailBlacklisted"], {names[i] for i in c["listIds"]})
        for email, c in brevo.state()["contacts"].items()
    }
    expected = oracle(traffic, raw_events)
    assert actual == expected
    assert {"hard_bounce", "soft_bounce"} <= {
        a.get("MG_BOUNCE_TYPE") for a, _, _ in expected.values()
    }
    sent = sorted(
        (
            e["event_properties"]["mailgun_event_id"],
            e["event_name"],
            e["event_properties"].get("reason"),
        )
        for e in brevo.events
    )
    assert sent == sorted(
        (raw["id"], brevo_event_name(raw), raw.get("reason") if raw["event"] == "failed" else None)
        for _, raw in raw_events
        if raw["event"] in BREVO_EVENTS
    )
    # the traffic holds what the rule is about: suppressions that are not bounces
    assert {"suppress-unsubscribe", "suppress-complaint"} <= {r for _, _, r in sent}
