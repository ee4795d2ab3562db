"""Issue 12, suppressions that mean what they say: a store written under rules version 1 (every
permanent failure a hard bounce) is corrected by the next run of the real console script."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import create_engine, delete, update

from fakes.events import tap_record
from target_brevo.client import MAX_LIST_EMAILS, BrevoClient
from target_brevo.store import contacts_table, events_table, meta_table, store_url
from tests.target.conftest import API_KEY, at, on_both_stores, singer_lines

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo
    from tests.target.conftest import TargetRunner

UNSUBSCRIBED = {
    "domain": "mg.example.com",
    "address": "ann@example.com",
    "tags": ["*"],
    "created_at": "2026-11-01T10:00:00+00:00",
}


def as_rules_version_1(url: str, lists: dict[str, int]) -> None:
    """Make a store look as version 1 of the target left it: the fingerprint of its settings
    without a rules version, no `rules_version`, and one suppression that was still queued for
    Brevo when that run ended, applied as version 1 did (a hard bounce event, a hard bounce
    flag on its contact).
    """
    v1 = {
        "field_mapping": None,  # any other digest: what matters is that one was written
        "lists": dict(sorted(lists.items())),
    }
    engine = create_engine(store_url(url))
    with engine.begin() as conn:
        m = meta_table.c
        conn.execute(delete(meta_table).where(m.key == "rules_version"))
        conn.execute(
            update(meta_table)
            .where(m.key == "contact_rules_fingerprint")
            .values(value=hashlib.sha256(json.dumps(v1).encode()).hexdigest())
        )
        queued = {
            "event_name": "email_hard_bounced",
            "event_date": "2026-11-01T12:00:40.000000+00:00",
            "identifiers": {"email_id": "cid@example.com"},
            "event_properties": {
                "mailgun_event_id": "c1",
                "severity": "permanent",
                "reason": "suppress-complaint",
            },
        }
        conn.execute(
            events_table.insert().values(
                id="c1",
                timestamp=queued["event_date"],
                pending=True,
                payload=msgspec.json.encode(queued).decode(),
            )
        )
        conn.execute(
            contacts_table.insert().values(
                email="cid@example.com",
                hard_bounce=True,
                soft_bounce=False,
                complained=False,
                unsubscribed=False,
                engaged=False,
                dirty=True,
            )
        )
    engine.dispose()


@on_both_stores
def test_a_store_written_under_the_old_rule_is_corrected_on_the_next_run(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lists = {role: brevo.add_list(role) for role in ("bounced", "complained", "all")}
    # Version 1 read Ann's suppress-unsubscribe failure as a hard bounce; its store kept the
    # flag, not the reason, so a bounce stands for it here. Bob really bounced.
    first = {
        "events": [
            tap_record(
                "failed",
                at(0),
                event_id="a1",
                recipient="ann@example.com",
                severity="permanent",
                reason="bounce",
            ),
            tap_record(
                "failed",
                at(0),
                event_id="b1",
                recipient="bob@example.com",
                severity="permanent",
                reason="bounce",
            ),
        ],
        "unsubscribes": [UNSUBSCRIBED],
    }
    assert target.run(singer_lines(first), lists=lists).returncode == 0
    ann = brevo.contacts["ann@example.com"]
    assert ann["attributes"]["MG_BOUNCE_TYPE"] == "hard_bounce"
    assert lists["bounced"] in ann["listIds"]
    as_rules_version_1(target.config()["engagement_store"], lists)

    later = {
        "events": [tap_record("delivered", at(60), event_id="d1", recipient="dan@example.com")]
    }
    run = target.run(singer_lines(later), lists=lists)
    assert run.returncode == 0, run.stderr
    assert "written under rules version 1" in run.stderr
    assert "2 contacts corrected" in run.stderr  # Ann, and Cid from its queued event
    ann, bob, cid = (brevo.contacts[f"{n}@example.com"] for n in ("ann", "bob", "cid"))
    assert "MG_BOUNCE_TYPE" not in ann["attributes"]
    assert ann["attributes"]["MG_UNSUBSCRIBED"] is True
    assert ann["listIds"] == {lists["all"]}  # out of Bounced
    assert ann["emailBlacklisted"] is True  # as an unsubscribe now; the target never unsets it
    assert bob["attributes"]["MG_BOUNCE_TYPE"] == "hard_bounce"
    assert bob["listIds"] == {lists["all"], lists["bounced"]}
    assert "MG_BOUNCE_TYPE" not in cid["attributes"]
    assert cid["listIds"] == {lists["all"], lists["complained"]}
    assert cid["emailBlacklisted"] is True
    sent = {e["event_properties"]["mailgun_event_id"]: e for e in brevo.events}
    assert sent["c1"]["event_name"] == "email_suppressed"
    assert sent["c1"]["event_properties"]["reason"] == "suppress-complaint"
    assert run.summary["removed_from_list"] == {str(lists["bounced"]): 1}
    removals = brevo.calls("POST", r"/contacts/lists/\d+/contacts/remove$")
    assert [r.json() for r in removals] == [{"emails": ["ann@example.com"]}]

    again = target.run(singer_lines(later), lists=lists)  # corrected once, not every run
    assert again.returncode == 0, again.stderr
    assert "rules version 1" not in again.stderr
    assert len(brevo.calls("POST", r"/contacts/lists/\d+/contacts/remove$")) == 1


def test_list_removals_go_in_requests_of_at_most_150(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    bounced = brevo.add_list("bounced")
    emails = [f"p{i:03}@example.com" for i in range(MAX_LIST_EMAILS + 1)]
    events = [
        tap_record(
            "failed", at(0), event_id=f"e{i}", recipient=e, severity="permanent", reason="bounce"
        )
        for i, e in enumerate(emails)
    ]
    assert target.run(singer_lines({"events": events}), lists={"bounced": bounced}).returncode == 0
    assert all(bounced in brevo.contacts[e]["listIds"] for e in emails)
    client = BrevoClient(brevo.base_url + "/v3", API_KEY)
    client.remove_from_list(bounced, emails)
    sizes = [
        len(r.json()["emails"])
        for r in brevo.calls("POST", r"/contacts/lists/\d+/contacts/remove$")
    ]
    assert sizes == [150, 1]
    assert not any(bounced in brevo.contacts[e]["listIds"] for e in emails)
