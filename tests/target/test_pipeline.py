"""target-brevo end to end: the real console script, tap-shaped input, the fake Brevo over HTTP."""

from __future__ import annotations

import contextlib
import io
import json
from typing import TYPE_CHECKING, Any

import pytest

from fakes.events import tap_record
from target_brevo.target import TargetBrevo
from tests.target.conftest import (
    API_KEY,
    SCHEMAS,
    TargetRunner,
    at,
    on_both_stores,
    singer_lines,
)

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo

DAY = 86_400.0


def scenario() -> dict[str, list[dict[str, Any]]]:
    """One of everything the rules speak about."""
    ann = "Ann@Example.com"
    events = [
        tap_record("delivered", at(0), event_id="a1", recipient=ann, message_id="m1"),
        tap_record("opened", at(60), event_id="a2", recipient=ann, message_id="m1"),
        # the same message, opened again
        tap_record("opened", at(120), event_id="a3", recipient=ann, message_id="m1"),
        tap_record("delivered", at(180), event_id="a4", recipient=ann, message_id="m2"),
        tap_record("clicked", at(240), event_id="a5", recipient=ann, message_id="m2",
                   url="https://x.test/p"),
        tap_record("delivered", at(DAY), event_id="a6", recipient=ann, message_id="m3"),
        tap_record("accepted", at(10), event_id="a7", recipient="ivy@example.com",
                   message_id="m4"),
        tap_record("failed", at(20), event_id="b1", recipient="bob@example.com",
                   severity="permanent", reason="bounce"),
        tap_record("failed", at(30), event_id="c1", recipient="cat@example.com",
                   severity="temporary", reason="mailbox full"),
        tap_record("complained", at(40), event_id="d1", recipient="dan@example.com"),
        tap_record("delivered", at(50), event_id="x1", recipient="not-an-email"),
    ]  # fmt: skip
    return {
        "events": events,
        "webhook_events": [{**events[0], "received_at": "2026-11-01T12:00:05+00:00"}],
        "bounces": [{"domain": "mg.example.com", "address": "gus@example.com", "code": "550",
                     "error": "no such user", "created_at": "2026-11-01T10:00:00+00:00"}],
        "complaints": [{"domain": "mg.example.com", "address": "eve@example.com",
                        "created_at": "2026-11-01T10:00:00+00:00"}],
        "unsubscribes": [{"domain": "mg.example.com", "address": "fay@example.com",
                          "tags": ["*"], "created_at": "2026-11-01T10:00:00+00:00"}],
        "list_members": [
            {"list_address": "news@mg.example.com", "address": "ann@example.com",
             "name": "Ann Lee", "vars": {}, "subscribed": True},
            {"list_address": "news@mg.example.com", "address": "hal@example.com",
             "name": "H J", "vars": {"first_name": "Hal", "last_name": "Jordan"},
             "subscribed": True},
        ],
        "domains": [{"name": "mg.example.com"}],
    }  # fmt: skip


def contacts(fake: FakeBrevo) -> dict[str, Any]:
    """email -> (attributes, blocklisted, lists) as Brevo holds them."""
    return {
        email: (c["attributes"], c["emailBlacklisted"], c["listIds"])
        for email, c in fake.state()["contacts"].items()
    }


@on_both_stores
def test_a_run_leaves_brevo_exactly_as_the_rules_say(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    engaged, bounced, complained = (brevo.add_list(n) for n in ("engaged", "bounced", "complained"))
    lists = {"engaged": engaged, "bounced": bounced, "complained": complained}
    run = target.run(singer_lines(scenario()), lists=lists)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmarks": {"run": 1}}]
    everyone = 4  # the "Mailgun contacts" list the target created for its imports
    assert brevo.lists[everyone]["name"] == "Mailgun contacts"
    assert contacts(brevo) == {
        "ann@example.com": (
            {"MG_OPEN_RATE": 0.3333, "MG_CLICK_RATE": 0.3333, "MG_ENGAGEMENT": 33.3,
             "MG_LAST_DELIVERED": "2026-11-02", "FIRSTNAME": "Ann", "LASTNAME": "Lee"},
            False, [engaged, everyone],
        ),
        "bob@example.com": ({"MG_BOUNCE_TYPE": "hard_bounce"}, True, [bounced, everyone]),
        "cat@example.com": ({"MG_BOUNCE_TYPE": "soft_bounce"}, False, [everyone]),
        "dan@example.com": ({}, True, [complained, everyone]),
        "eve@example.com": ({}, True, [complained, everyone]),
        "fay@example.com": ({"MG_UNSUBSCRIBED": True}, True, [everyone]),
        "gus@example.com": ({"MG_BOUNCE_TYPE": "hard_bounce"}, True, [bounced, everyone]),
        "hal@example.com": ({"FIRSTNAME": "Hal", "LASTNAME": "Jordan"}, False, [everyone]),
        "ivy@example.com": ({}, False, [everyone]),
    }  # fmt: skip
    names = sorted((e["properties_id"], e["event_name"]) for e in _events(brevo))
    assert names == [
        ("a1", "email_delivered"), ("a2", "email_opened"), ("a3", "email_opened"),
        ("a4", "email_delivered"), ("a5", "email_clicked"), ("a6", "email_delivered"),
        ("b1", "email_hard_bounced"), ("c1", "email_soft_bounced"), ("d1", "email_complained"),
    ]  # fmt: skip
    summary = run.summary
    assert summary["events_sent"] == 9
    assert summary["duplicates_ignored"] == 1  # the webhook copy of a1
    assert summary["rows_skipped"] == {"events: invalid email": 1}
    assert summary["streams_skipped"] == ["domains"]
    assert summary["contacts_upserted"] == 9
    assert summary["blocklisted"] == 5
    assert summary["added_to_list"] == {str(engaged): 1, str(bounced): 2, str(complained): 2,
                                        str(everyone): 9}  # fmt: skip
    # attributes were created before any contact was written
    first_import = next(i for i, r in enumerate(brevo.requests) if r.path.endswith("/import"))
    created = [i for i, r in enumerate(brevo.requests) if "/contacts/attributes/" in r.path]
    assert len(created) == 8 and max(created) < first_import  # MG_VALIDATION, MG_RISK too
    # batches, not one call per record
    assert len(brevo.calls("POST", "/events/batch$")) == 1
    assert API_KEY not in run.stderr + run.stdout


def _events(fake: FakeBrevo) -> list[dict[str, Any]]:
    return [{**e, "properties_id": e["event_properties"]["mailgun_event_id"]} for e in fake.events]


@on_both_stores
def test_replaying_the_same_input_changes_nothing_and_sends_no_event_twice(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines(scenario())
    assert target.run(lines).returncode == 0
    before = brevo.state()
    calls_before = len(brevo.requests)
    second = target.run(lines)
    assert second.returncode == 0, second.stderr
    after = brevo.state()
    assert after["contacts"] == before["contacts"]
    assert after["events"] == before["events"]
    # nothing changed: the one call confirms the first run's imports, all at once
    assert [(r.method, r.path) for r in brevo.requests[calls_before:]] == [("GET", "/v3/processes")]
    assert second.summary["imports_unconfirmed"] == 0
    calls_before = len(brevo.requests)
    assert target.run(lines).returncode == 0
    assert len(brevo.requests) == calls_before  # and then not a single call
    assert second.summary["duplicates_ignored"] == 11  # ten events and the webhook copy
    assert second.states == [{"bookmarks": {"run": 1}}]


@on_both_stores
def test_webhook_and_polled_copies_of_an_event_count_once(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    opened = tap_record(
        "opened", at(0), event_id="w1", recipient="ann@example.com", message_id="m1"
    )
    delivered = tap_record(
        "delivered", at(0), event_id="w0", recipient="ann@example.com", message_id="m1"
    )
    hook = {**opened, "received_at": "2026-11-01T12:00:03+00:00"}
    run = target.run(singer_lines({"webhook_events": [hook], "events": [delivered, opened]}))
    assert run.returncode == 0, run.stderr
    assert [e["event_name"] for e in brevo.events] == ["email_delivered", "email_opened"]
    assert brevo.contacts["ann@example.com"]["attributes"]["MG_OPEN_RATE"] == 1.0


def test_events_disabled_sends_none_but_keeps_the_rates(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(singer_lines(scenario()), events_enabled=False)
    assert run.returncode == 0, run.stderr
    assert brevo.events == []
    assert brevo.calls("POST", "/events/batch$") == []
    assert brevo.contacts["ann@example.com"]["attributes"]["MG_ENGAGEMENT"] == 33.3


def test_field_mapping_and_blocklist_on_are_honoured(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(
        singer_lines(scenario()),
        field_mapping={"engagement_score": "SCORE", "first_name": None},
        blocklist_on=["hard_bounce"],
    )
    assert run.returncode == 0, run.stderr
    state = contacts(brevo)
    assert state["ann@example.com"][0]["SCORE"] == 33.3
    assert "MG_ENGAGEMENT" not in state["ann@example.com"][0]
    assert "FIRSTNAME" not in state["hal@example.com"][0]
    assert brevo.attributes["SCORE"] == "float"
    assert state["fay@example.com"][1] is False  # unsubscribe no longer blocklists
    assert state["bob@example.com"][1] is True


def test_never_unblocklists_anyone(brevo: FakeBrevo, target: TargetRunner) -> None:
    brevo.add_list("Mailgun contacts")
    assert target.run(singer_lines({"bounces": scenario()["bounces"]})).returncode == 0
    assert brevo.contacts["gus@example.com"]["emailBlacklisted"] is True
    delivered = tap_record("delivered", at(DAY), event_id="g1", recipient="gus@example.com")
    assert target.run(singer_lines({"events": [delivered]})).returncode == 0
    assert brevo.contacts["gus@example.com"]["emailBlacklisted"] is True
    bodies = [r.json() for r in brevo.calls("POST", "/contacts/import$")]
    # both runs import gus blocklisted: a later delivery never turns the flag off
    assert [(b["emailBlacklist"], [row["email"] for row in b["jsonBody"]]) for b in bodies] == [
        (True, ["gus@example.com"]),
        (True, ["gus@example.com"]),
    ]
    assert not any("emailBlacklisted" in row for b in bodies for row in b["jsonBody"])


def test_dry_run_sends_nothing_commits_nothing_and_emits_no_state(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines(scenario())
    dry = target.run(lines, dry_run=True)
    assert dry.returncode == 0, dry.stderr
    assert {r.method for r in brevo.requests} == {"GET"}
    assert brevo.contacts == {}
    assert dry.states == []
    assert "dry-run: would POST" in dry.stderr
    assert "/events/batch" in dry.stderr
    assert dry.summary["dry_run"] is True
    real = target.run(lines)  # nothing was committed: the real run does everything
    assert real.returncode == 0, real.stderr
    assert real.summary["events_sent"] == 9
    assert len(brevo.contacts) == 9


def test_state_is_emitted_only_after_brevo_accepted(brevo: FakeBrevo, target: TargetRunner) -> None:
    brevo.fail_next("POST /v3/events/batch", 401, {"message": "Key not found"})
    run = target.run(singer_lines(scenario()))
    assert run.returncode == 1
    assert run.states == []
    assert "check the api_key setting (BREVO_API_KEY)" in run.stderr
    assert "Traceback" not in run.stderr
    rerun = target.run(singer_lines(scenario()))
    assert rerun.returncode == 0, rerun.stderr
    assert len(brevo.events) == 9
    assert rerun.states == [{"bookmarks": {"run": 1}}]


def test_a_refused_key_stops_with_a_clear_message_and_is_never_logged(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    secret = "xkeysib-0123456789abcdef-SECRET"
    run = target.run(singer_lines(scenario()), api_key=secret)
    assert run.returncode == 1
    assert "Brevo refused the API key" in run.stderr
    assert secret not in run.stderr + run.stdout
    assert brevo.contacts == {}


def test_a_malformed_line_is_reported_with_its_number_and_loses_nothing_before_it(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    good = singer_lines(
        {"events": [tap_record("delivered", at(0), event_id="e1", recipient="ann@example.com")]}
    )
    lines = [*good, '{"type": "RECORD", "stream": "events", "record": {"id": ', good[-1]]
    run = target.run(lines)
    assert run.returncode == 2
    assert f"input line {len(good) + 1} is not valid JSON" in run.stderr
    assert run.states == [json.loads(good[-1])["value"]]
    assert [e["event_name"] for e in brevo.events] == ["email_delivered"]
    assert "ann@example.com" in brevo.contacts


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (  # a RECORD of a stream whose SCHEMA never came
            {"type": "RECORD", "stream": "bounces", "record": {"address": "a@example.com"}},
            "A record for stream 'bounces' was encountered before a corresponding schema",
        ),
        (  # a RECORD without its stream's key properties
            {"type": "RECORD", "stream": "events", "record": {"event": "opened"}},
            "Record is missing one or more key_properties",
        ),
    ],
)
def test_a_singer_protocol_error_is_reported_like_a_malformed_line(
    brevo: FakeBrevo, target: TargetRunner, bad: dict[str, Any], says: str
) -> None:
    good = singer_lines(
        {"events": [tap_record("delivered", at(0), event_id="e1", recipient="ann@example.com")]}
    )
    run = target.run([*good, json.dumps(bad), good[-1]])
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if f"input line {len(good) + 1}: " in line]
    assert len(errors) == 1 and says in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert run.states == [json.loads(good[-1])["value"]]
    assert [e["event_name"] for e in brevo.events] == ["email_delivered"]
    assert "ann@example.com" in brevo.contacts


def test_lists_all_is_used_as_given_and_unknown_lists_are_a_clear_error(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    mine = brevo.add_list("everyone from Mailgun")
    events = {
        "events": [tap_record("delivered", at(0), event_id="e1", recipient="ann@example.com")]
    }
    run = target.run(singer_lines(events), lists={"all": mine})
    assert run.returncode == 0, run.stderr
    assert brevo.contacts["ann@example.com"]["listIds"] == {mine}
    assert brevo.calls("POST", "/contacts/lists$") == []  # nothing created
    more = {"events": [tap_record("opened", at(5), event_id="e2", recipient="ann@example.com")]}
    missing = target.run(singer_lines(more), lists={"all": mine, "engaged": 999})
    assert missing.returncode == 1
    assert "list 999 (lists.engaged) does not exist in Brevo" in missing.stderr
    assert missing.states == []


def test_changed_lists_and_mapping_reach_contacts_brevo_already_has(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines(
        {"events": [tap_record("opened", at(0), event_id="a", recipient="ann@example.com")]}
    )
    assert target.run(lines).returncode == 0
    assert "OPENS" not in brevo.contacts["ann@example.com"]["attributes"]
    engaged = brevo.add_list("engaged")
    changed = {"lists": {"engaged": engaged}, "field_mapping": {"open_rate": "OPENS"}}
    run = target.run(lines, **changed)  # the same input: nothing new about Ann
    assert run.returncode == 0, run.stderr
    assert engaged in brevo.contacts["ann@example.com"]["listIds"]
    assert brevo.contacts["ann@example.com"]["attributes"]["OPENS"] == 1.0
    assert run.stderr.count("all 1 contacts are written again") == 1
    imports = len(brevo.calls("POST", "/contacts/import$"))
    again = target.run(lines, **changed)  # same settings again: nothing to rewrite
    assert again.returncode == 0, again.stderr
    assert len(brevo.calls("POST", "/contacts/import$")) == imports
    assert "written again" not in again.stderr


def test_attribute_names_in_field_mapping_are_written_in_capitals(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(singer_lines(scenario()), field_mapping={"engagement_score": "mg_Score"})
    assert run.returncode == 0, run.stderr
    assert brevo.attributes["MG_SCORE"] == "float"
    assert brevo.contacts["ann@example.com"]["attributes"]["MG_SCORE"] == 33.3
    rows = [row for r in brevo.calls("POST", "/contacts/import$") for row in r.json()["jsonBody"]]
    assert all(name == name.upper() for row in rows for name in row.get("attributes", {}))


class StateWitness(io.StringIO):
    """stdout for an in-process target: at each STATE line, what Brevo held at that moment."""

    def __init__(self, fake: FakeBrevo) -> None:
        super().__init__()
        self.fake = fake
        self.seen: list[tuple[dict[str, Any], set[str], set[str]]] = []

    def write(self, text: str) -> int:
        """Note Brevo's events and contacts as each STATE goes out."""
        for line in text.splitlines():
            held = self.fake.state()
            ids = {e["event_properties"]["mailgun_event_id"] for e in held["events"]}
            self.seen.append((json.loads(line), ids, set(held["contacts"])))
        return super().write(text)


@pytest.mark.usefixtures("in_process_target")
def test_each_state_goes_out_only_once_brevo_holds_what_it_covers(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = [json.dumps({"type": "SCHEMA", "stream": "events", "key_properties": ["id"],
                         "schema": SCHEMAS["events"][0]})]  # fmt: skip
    for n in range(5):
        record = tap_record(
            "opened", at(n), event_id=f"e{n}", recipient=f"u{n}@example.com", message_id=f"m{n}"
        )
        lines.append(json.dumps({"type": "RECORD", "stream": "events", "record": record}))
        lines.append(json.dumps({"type": "STATE", "value": {"through": n}}))
    witness = StateWitness(brevo)
    runner = TargetBrevo(config=target.config())
    runner._MAX_RECORD_AGE_IN_MINUTES = 0.0  # drain (and emit STATE) after every record
    with contextlib.redirect_stdout(witness):
        runner.listen(io.StringIO("\n".join(lines) + "\n"))
    states = [state["through"] for state, _, _ in witness.seen]
    assert len(set(states)) >= 4, states  # several STATEs went out, not only the last
    assert states == sorted(states) and states[-1] == 4
    for state, ids, contacts in witness.seen:
        covered = range(state["through"] + 1)
        assert {f"e{n}" for n in covered} <= ids, (state, ids)
        assert {f"u{n}@example.com" for n in covered} <= contacts, (state, contacts)


def test_the_summary_counts_only_blocklisting_and_list_additions_brevo_did_not_have(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    bounced = brevo.add_list("bounced")
    first = target.run(singer_lines({"bounces": scenario()["bounces"]}), lists={"bounced": bounced})
    assert first.returncode == 0, first.stderr
    everyone = 2  # the "Mailgun contacts" list the target created
    assert (first.summary["blocklisted"], first.summary["added_to_list"]) == (
        1,
        {str(bounced): 1, str(everyone): 1},
    )
    delivered = tap_record(
        "delivered", at(DAY), event_id="g1", recipient="gus@example.com"
    )  # gus again
    second = target.run(singer_lines({"events": [delivered]}), lists={"bounced": bounced})
    assert second.returncode == 0, second.stderr
    assert second.summary["contacts_upserted"] == 1  # re-imported with his new date...
    assert second.summary["blocklisted"] == 0  # ...but he was blocklisted already
    assert second.summary["added_to_list"] == {}  # and in both lists already
    assert brevo.contacts["gus@example.com"]["emailBlacklisted"] is True
