"""Every rule of issue #3 with exact expected values: no server, no store, plain data."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fakes.events import tap_record
from target_brevo import rules
from target_brevo.rules import ContactFacts, ContactState
from target_brevo.settings import Settings
from tests.target.conftest import at

ALL_REASONS = frozenset(rules.BLOCKLIST_REASONS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann.Lee+news@Example.COM ", "ann.lee+news@example.com"),
        ("bob@mg.example.co.uk", "bob@mg.example.co.uk"),
        ("no-at-sign.example.com", None),
        ("two@@example.com", None),
        ("spaces in@example.com", None),
        ("ann@localhost", None),
        ("ann@-bad.example.com", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_emails_are_trimmed_lowercased_and_checked(raw: object, expected: str | None) -> None:
    assert rules.normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("part", "whole", "expected"),
    [(1, 3, 0.3333), (2, 3, 0.6667), (1, 32, 0.0313), (0, 5, 0.0), (5, 5, 1.0), (1, 0, None)],
)
def test_rates_round_half_up_to_4_decimals_and_need_deliveries(
    part: int, whole: int, expected: float | None
) -> None:
    assert rules.rate(part, whole) == expected


@pytest.mark.parametrize(
    ("open_rate", "click_rate", "expected"),
    [(0.5, 0.25, 32.5), (1.0, 1.0, 100.0), (0.3333, 0.0, 10.0), (0.6667, 0.3333, 43.3),
     (0.0005, 0.0005, 0.1), (0.0, 0.0, 0.0)],
)  # fmt: skip
def test_engagement_score(open_rate: float, click_rate: float, expected: float) -> None:
    assert rules.engagement_score(open_rate, click_rate) == expected


def test_contact_fields_with_deliveries() -> None:
    facts = ContactFacts(
        "ann@example.com", delivered=3, opened=2, clicked=1, last_delivered="2026-11-02",
        soft_bounce=True, first_name="Ann", last_name="Lee",
    )  # fmt: skip
    assert rules.contact_fields(facts) == {
        "email": "ann@example.com",
        "open_rate": 0.6667,
        "click_rate": 0.3333,
        "engagement_score": 43.3,
        "last_delivered": "2026-11-02",
        "bounce_type": "soft_bounce",
        "first_name": "Ann",
        "last_name": "Lee",
    }


def test_contact_fields_leave_out_what_is_unknown() -> None:
    facts = ContactFacts("bob@example.com", hard_bounce=True, soft_bounce=True, unsubscribed=True)
    # no delivery: no rates, no score; hard wins over soft; unsubscribed only ever true
    assert rules.contact_fields(facts) == {
        "email": "bob@example.com",
        "bounce_type": "hard_bounce",
        "unsubscribed": True,
    }


def test_field_mapping_renames_and_null_drops() -> None:
    fields = {"email": "a@x.com", "open_rate": 0.5, "first_name": "Ann", "bounce_type": "hard"}
    mapping = {**rules.DEFAULT_FIELD_MAPPING, "first_name": None, "open_rate": "OPENS"}
    assert rules.brevo_attributes(fields, mapping) == {
        "OPENS": 0.5,
        "MG_BOUNCE_TYPE": "hard",
    }


@pytest.mark.parametrize(
    ("facts", "blocklist_on", "expected"),
    [
        (ContactFacts("a@x.com", hard_bounce=True), ALL_REASONS, True),
        (ContactFacts("a@x.com", complained=True), ALL_REASONS, True),
        (ContactFacts("a@x.com", unsubscribed=True), ALL_REASONS, True),
        (ContactFacts("a@x.com", soft_bounce=True), ALL_REASONS, False),
        (ContactFacts("a@x.com", unsubscribed=True), frozenset({"hard_bounce"}), False),
        (ContactFacts("a@x.com", hard_bounce=True), frozenset(), False),
        (ContactFacts("a@x.com", delivered=4, opened=4), ALL_REASONS, False),
    ],
)
def test_blocklist(facts: ContactFacts, blocklist_on: frozenset[str], expected: bool) -> None:
    assert rules.blocklisted(facts, blocklist_on) is expected


def test_lists_engaged_bounced_complained_and_unset_roles_skipped() -> None:
    lists = {"engaged": 10, "bounced": 11, "complained": 12}
    facts = ContactFacts("a@x.com", engaged=True, hard_bounce=True, complained=True)
    assert rules.list_ids(facts, lists) == frozenset({10, 11, 12})
    assert rules.list_ids(ContactFacts("a@x.com", soft_bounce=True), lists) == frozenset()
    assert rules.list_ids(facts, {"bounced": 11}) == frozenset({11})


@pytest.mark.parametrize(
    ("event", "severity", "expected"),
    [
        ("delivered", None, "delivered"),
        ("opened", None, "opened"),
        ("clicked", None, "clicked"),
        ("failed", "permanent", "hard_bounced"),
        ("failed", "temporary", "soft_bounced"),
        ("complained", None, "complained"),
        ("unsubscribed", None, "unsubscribed"),
        ("accepted", None, None),
        ("stored", None, None),
    ],
)
def test_which_events_brevo_gets(event: str, severity: str | None, expected: str | None) -> None:
    assert rules.event_name_key(event, severity) == expected


def test_clicked_event_becomes_brevo_event_with_url() -> None:
    record = tap_record(
        "clicked",
        at(1.5),
        event_id="ev1",
        recipient=" Ann@Example.com",
        message_id="m1@mg.example.com",
        url="https://x.test/a",
    )
    facts = rules.event_facts(record, rules.DEFAULT_EVENT_NAMES)
    assert not isinstance(facts, str)
    assert facts.key == ("ev1", "2026-11-01T12:00:01.500000+00:00")
    assert facts.brevo_event == {
        "event_name": "email_clicked",
        "event_date": "2026-11-01T12:00:01.500000+00:00",
        "identifiers": {"email_id": "ann@example.com"},
        "event_properties": {
            "mailgun_event_id": "ev1",
            "message_id": "m1@mg.example.com",
            "subject": "Hello",
            "domain": "mg.example.com",
            "tags": ["newsletter"],
            "url": "https://x.test/a",
        },
    }


def test_failed_event_carries_severity_and_reason_and_custom_name() -> None:
    record = tap_record(
        "failed",
        at(0),
        event_id="ev2",
        recipient="bob@example.com",
        severity="temporary",
        reason="full",
    )
    names = {**rules.DEFAULT_EVENT_NAMES, "soft_bounced": "mg_soft"}
    facts = rules.event_facts(record, names)
    assert not isinstance(facts, str)
    assert (facts.soft_bounce, facts.hard_bounce) == (True, False)
    assert facts.brevo_event is not None
    assert facts.brevo_event["event_name"] == "mg_soft"
    assert facts.brevo_event["event_properties"]["severity"] == "temporary"
    assert facts.brevo_event["event_properties"]["reason"] == "full"
    assert "url" not in facts.brevo_event["event_properties"]


def test_events_disabled_still_count_for_the_contact() -> None:
    facts = rules.event_facts(
        tap_record("opened", at(0), event_id="ev3", recipient="a@x.com"), None
    )
    assert not isinstance(facts, str)
    assert facts.brevo_event is None
    assert facts.event == "opened"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"recipient": "nope"}, "invalid email"),
        ({"id": None}, "invalid record (id, timestamp and event are required)"),
        ({"timestamp": "yesterday"}, "invalid record (id, timestamp and event are required)"),
        ({"event": 7}, "invalid record (id, timestamp and event are required)"),
    ],
)
def test_unusable_event_records_are_skipped_with_a_reason(
    change: dict[str, object], reason: str
) -> None:
    record = {**tap_record("delivered", at(0), event_id="ev4", recipient="a@x.com"), **change}
    assert rules.event_facts(record, rules.DEFAULT_EVENT_NAMES) == reason


def test_timestamps_are_canonical_whatever_their_form() -> None:
    expected = "2026-11-01T12:00:00.000000+00:00"
    assert rules.iso_timestamp("2026-11-01T12:00:00Z") == expected
    assert rules.iso_timestamp("2026-11-01T13:00:00+01:00") == expected
    assert rules.iso_timestamp(datetime(2026, 11, 1, 12, tzinfo=timezone.utc)) == expected
    assert rules.iso_timestamp(datetime(2026, 11, 1, 12)) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"name": "Ann Marie Lee", "vars": {}}, ("Ann", "Marie Lee")),
        ({"name": "Ann", "vars": None}, ("Ann", None)),
        ({"name": "Ann Lee", "vars": {"first_name": "Annie", "last_name": "L."}}, ("Annie", "L.")),
        ({"name": "Ann Lee", "vars": {"first_name": "Annie"}}, ("Annie", "Lee")),
        ({"name": "", "vars": {"age": 3}}, (None, None)),
    ],
)
def test_list_member_names(record: dict[str, object], expected: tuple[str | None, ...]) -> None:
    assert rules.split_name(record) == expected


def test_settings_defaults_and_merges() -> None:
    settings = Settings.from_config(
        {"api_key": "k", "lists": {"engaged": 3, "all": 9}, "event_names": {"opened": "o"}}
    )
    assert settings.lists == {"engaged": 3}
    assert settings.all_list == 9
    assert settings.blocklist_on == ALL_REASONS
    assert settings.event_names is not None
    assert settings.event_names["opened"] == "o"
    assert settings.event_names["clicked"] == "email_clicked"
    assert settings.field_mapping["open_rate"] == "MG_OPEN_RATE"
    assert Settings.from_config({"events_enabled": False}).event_names is None
    assert settings.unknown_names() == []
    typos = Settings.from_config({"field_mapping": {"opens": "X"}, "event_names": {"open": "o"}})
    assert typos.unknown_names() == ["field_mapping.opens", "event_names.open"]


@pytest.mark.parametrize(
    ("severity", "reason", "flags", "name"),
    [
        # (hard_bounce, soft_bounce, unsubscribed, complained), Brevo event name
        ("permanent", "suppress-unsubscribe", (False, False, True, False), "email_suppressed"),
        ("permanent", "suppress-complaint", (False, False, False, True), "email_suppressed"),
        ("permanent", "bounce", (True, False, False, False), "email_hard_bounced"),
        ("permanent", "delayed-bounce", (True, False, False, False), "email_hard_bounced"),
        ("permanent", "suppress-bounce", (True, False, False, False), "email_hard_bounced"),
        ("permanent", "old", (True, False, False, False), "email_hard_bounced"),
        ("permanent", None, (True, False, False, False), "email_hard_bounced"),
        ("temporary", "espblock", (False, True, False, False), "email_soft_bounced"),
        # a temporary failure is soft whatever its reason says
        ("temporary", "suppress-unsubscribe", (False, True, False, False), "email_soft_bounced"),
    ],
)
def test_permanent_failures_by_reason(
    severity: str, reason: str | None, flags: tuple[bool, ...], name: str
) -> None:
    extra = {"severity": severity, "reason": reason}  # None: Mailgun gave no reason
    facts = rules.event_facts(
        tap_record("failed", at(0), event_id="ev9", recipient="Ann@x.com", **extra),
        {**rules.DEFAULT_EVENT_NAMES},
    )
    assert not isinstance(facts, str)
    assert (facts.hard_bounce, facts.soft_bounce, facts.unsubscribed, facts.complained) == flags
    assert facts.brevo_event is not None
    assert facts.brevo_event["event_name"] == name
    assert facts.brevo_event["event_properties"].get("reason") == reason


def test_suppressed_event_name_is_configurable_and_defaults() -> None:
    assert rules.DEFAULT_EVENT_NAMES["suppressed"] == "email_suppressed"
    record = tap_record(
        "failed",
        at(0),
        event_id="ev10",
        recipient="a@x.com",
        severity="permanent",
        reason="suppress-complaint",
    )
    facts = rules.event_facts(record, {**rules.DEFAULT_EVENT_NAMES, "suppressed": "mg_stop"})
    assert not isinstance(facts, str) and facts.brevo_event is not None
    assert facts.brevo_event["event_name"] == "mg_stop"
    assert facts.brevo_event["event_properties"]["severity"] == "permanent"
    assert facts.brevo_event["event_properties"]["reason"] == "suppress-complaint"


def test_a_queued_suppression_of_rules_version_1_is_renamed_and_says_what_it_means() -> None:
    queued = {
        "event_name": "email_hard_bounced",
        "event_date": "2026-01-01T00:00:00.000000+00:00",
        "identifiers": {"email_id": "a@x.com"},
        "event_properties": {"severity": "permanent", "reason": "suppress-unsubscribe"},
    }
    names = {**rules.DEFAULT_EVENT_NAMES, "suppressed": "mg_stop"}
    assert rules.corrected_event(queued, names) == {**queued, "event_name": "mg_stop"}
    assert rules.corrected_event({**queued, "event_name": "mg_stop"}, names) is None
    assert rules.suppression_evidence(queued) == ("a@x.com", "unsubscribed")
    bounce = {**queued, "event_properties": {"severity": "permanent", "reason": "bounce"}}
    assert rules.corrected_event(bounce, names) is None
    assert rules.suppression_evidence(bounce) is None


@pytest.mark.parametrize(
    ("hard", "unsubscribed", "complained", "expected"),
    [
        (True, True, False, False),
        (True, False, True, False),
        (True, False, False, True),
        (False, True, True, False),
    ],
)
def test_a_hard_bounce_of_rules_version_1_on_an_unsubscribed_or_complained_contact_is_dropped(
    hard: bool, unsubscribed: bool, complained: bool, expected: bool
) -> None:
    assert rules.corrected_hard_bounce(hard, unsubscribed, complained) is expected


def event_facts_of(
    event: str, severity: str | None = None, seconds: float = 0.0
) -> rules.EventFacts:
    """An event of one kind for a@x.com, `seconds` after `at(0)`, as facts (failing on a skip)."""
    extra = {"severity": severity} if severity else {}
    record = tap_record(event, at(seconds), event_id="ev", recipient="a@x.com", **extra)
    facts = rules.event_facts(record, rules.DEFAULT_EVENT_NAMES)
    assert isinstance(facts, rules.EventFacts)
    return facts


@pytest.mark.parametrize(
    ("event", "severity", "expected"),
    [
        ("delivered", None, ContactState("a@x.com", last_delivered="2026-11-01")),
        ("opened", None, ContactState("a@x.com", engaged=True)),
        ("clicked", None, ContactState("a@x.com", engaged=True)),
        ("failed", "permanent", ContactState("a@x.com", hard_bounce=True)),
        ("failed", "temporary", ContactState("a@x.com", soft_bounce=True)),
        ("complained", None, ContactState("a@x.com", complained=True)),
        ("unsubscribed", None, ContactState("a@x.com", unsubscribed=True)),
        ("accepted", None, ContactState("a@x.com")),
        ("stored", None, ContactState("a@x.com")),
    ],
)
def test_what_one_event_says_about_its_contact(
    event: str, severity: str | None, expected: ContactState
) -> None:
    assert rules.event_contact(event_facts_of(event, severity)) == expected


def test_last_delivered_is_the_utc_day_of_a_delivered_event() -> None:
    late_evening = 11.5 * 3600  # 12:00 UTC + 11.5 h: 23:30 UTC, the same day
    assert rules.event_contact(
        event_facts_of("delivered", seconds=late_evening)
    ).last_delivered == ("2026-11-01")
    assert rules.event_contact(event_facts_of("delivered", seconds=12 * 3600)).last_delivered == (
        "2026-11-02"
    )


@pytest.mark.parametrize(
    ("event", "severity", "expected"),
    [
        ("delivered", None, (False, False)),
        ("opened", None, (True, False)),
        ("clicked", None, (False, True)),
        ("failed", "temporary", None),
        ("complained", None, None),
        ("accepted", None, None),
    ],
)
def test_which_events_mark_a_message(
    event: str, severity: str | None, expected: tuple[bool, bool] | None
) -> None:
    assert rules.message_marks(event_facts_of(event, severity)) == expected
    no_message = event_facts_of(event, severity)._replace(message_id=None)
    assert rules.message_marks(no_message) is None


def test_each_suppression_stream_sets_its_flag() -> None:
    assert {stream: rules.suppression_contact(stream, "a@x.com") for stream in (
        "bounces", "complaints", "unsubscribes")} == {
        "bounces": ContactState("a@x.com", hard_bounce=True),
        "complaints": ContactState("a@x.com", complained=True),
        "unsubscribes": ContactState("a@x.com", unsubscribed=True),
    }  # fmt: skip


def test_a_list_member_brings_its_names() -> None:
    member = {"address": "a@x.com", "name": "Ann Lee", "vars": {"first_name": "Annie"}}
    assert rules.member_contact(member, "a@x.com") == ContactState(
        "a@x.com", first_name="Annie", last_name="Lee"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, None, None),
        ("2026-11-01", None, "2026-11-01"),
        (None, "2026-11-01", "2026-11-01"),
        ("2026-11-02", "2026-11-01", "2026-11-02"),
        ("2026-11-01", "2026-11-02", "2026-11-02"),
    ],
)
def test_the_later_delivery_day_wins(
    old: str | None, new: str | None, expected: str | None
) -> None:
    assert rules.later_day(old, new) == expected


def test_merging_turns_flags_on_only_keeps_the_latest_day_and_replaces_names_by_names() -> None:
    old = ContactState(
        "a@x.com", last_delivered="2026-11-02", hard_bounce=True, engaged=True,
        first_name="Ann", last_name="Lee",
    )  # fmt: skip
    new = ContactState("a@x.com", last_delivered="2026-11-01", complained=True, first_name="Annie")
    assert rules.merge_contact(old, new) == ContactState(
        "a@x.com", last_delivered="2026-11-02", hard_bounce=True, complained=True, engaged=True,
        first_name="Annie", last_name="Lee",
    )  # fmt: skip
    assert rules.merge_contact(new, ContactState("a@x.com")) == new  # nothing new: no change
    assert rules.merge_contact(ContactState("a@x.com"), new) == new  # all new: all of it


def test_folding_merges_each_contacts_states_in_order() -> None:
    states = [
        ContactState("a@x.com", first_name="Ann"),
        ContactState("b@x.com", soft_bounce=True),
        ContactState("a@x.com", first_name="Annie", last_delivered="2026-11-01"),
        ContactState("a@x.com", engaged=True),
    ]
    assert rules.fold_contacts(states) == {
        "a@x.com": ContactState(
            "a@x.com", last_delivered="2026-11-01", engaged=True, first_name="Annie"
        ),
        "b@x.com": ContactState("b@x.com", soft_bounce=True),
    }


def verdict(result: str, risk: str | None = "low", at_: str | None = None) -> dict[str, object]:
    """A record's `validation`, as the mailgun-validate mapper adds it."""
    return {"result": result, "risk": risk, "reason": [], "did_you_mean": None,
            "is_disposable_address": False, "is_role_address": False,
            "validated_at": at_}  # fmt: skip


def test_a_records_verdict_is_read_from_its_validation() -> None:
    record = {"validation": verdict("undeliverable", "high", "2026-11-02T10:00:00Z")}
    assert rules.record_verdict(record) == rules.Verdict(
        "undeliverable", "high", "2026-11-02T10:00:00.000000+00:00"
    )
    assert rules.record_verdict({"validation": None}) is None  # not validated in this run
    assert rules.record_verdict({}) is None  # no mapper at all
    assert rules.record_verdict({"validation": {"result": None, "risk": "low"}}) is None


def test_the_latest_verdict_wins_and_an_unvalidated_record_erases_none() -> None:
    old = ContactState("a@x.com", validation_result="deliverable", validation_risk="low",
                       validated_at="2026-11-01T00:00:00.000000+00:00")  # fmt: skip
    later = ContactState("a@x.com", validation_result="undeliverable", validation_risk="high",
                         validated_at="2026-11-02T00:00:00.000000+00:00")  # fmt: skip
    earlier = later._replace(validated_at="2026-10-01T00:00:00.000000+00:00")
    merged = rules.merge_contact(old, later)
    assert (merged.validation_result, merged.validation_risk, merged.validated_at) == (
        "undeliverable", "high", "2026-11-02T00:00:00.000000+00:00"
    )  # fmt: skip
    assert rules.merge_contact(old, earlier) == old  # an older verdict read later loses
    assert rules.merge_contact(later, ContactState("a@x.com", engaged=True)) == later._replace(
        engaged=True
    )  # unvalidated: the verdict stays
    undated = ContactState("a@x.com", validation_result="catch_all", validation_risk=None)
    assert rules.merge_contact(later, undated).validation_result == "catch_all"  # read later


def test_events_suppressions_and_members_carry_their_records_verdict() -> None:
    record = tap_record("opened", at(0), event_id="e1", recipient="A@x.com", message_id="m")
    record["validation"] = verdict("do_not_send", "high", "2026-11-02T10:00:00+00:00")
    facts = rules.event_facts(record, dict(rules.DEFAULT_EVENT_NAMES))
    assert not isinstance(facts, str)
    state = rules.event_contact(facts)
    assert (state.validation_result, state.validation_risk, state.validated_at) == (
        "do_not_send", "high", "2026-11-02T10:00:00.000000+00:00"
    )  # fmt: skip
    bounce = rules.suppression_contact("bounces", "a@x.com", rules.record_verdict(record))
    assert bounce.hard_bounce and bounce.validation_result == "do_not_send"
    member = rules.member_contact(
        {"name": "Ann Lee", "validation": verdict("deliverable")}, "a@x.com"
    )
    assert (member.first_name, member.validation_result, member.validated_at) == (
        "Ann", "deliverable", None
    )  # fmt: skip


@pytest.mark.parametrize(
    ("result", "known_to_brevo", "withheld"),
    [("undeliverable", False, True), ("do_not_send", False, True),
     ("undeliverable", True, False),  # Brevo has it: updated, never deleted
     ("do_not_send", True, False), ("deliverable", False, False), ("catch_all", False, False),
     ("unknown", False, False), (None, False, False)],
)  # fmt: skip
def test_only_a_contact_validated_undeliverable_or_do_not_send_and_new_to_brevo_is_withheld(
    result: str | None, known_to_brevo: bool, withheld: bool
) -> None:
    assert rules.withheld(result, known_to_brevo) is withheld


def test_the_verdict_is_written_through_field_mapping_as_text_attributes() -> None:
    facts = ContactFacts("a@x.com", validation_result="catch_all", validation_risk="medium")
    fields = rules.contact_fields(facts)
    assert fields == {"email": "a@x.com", "validation_result": "catch_all",
                      "validation_risk": "medium"}  # fmt: skip
    assert rules.brevo_attributes(fields, rules.DEFAULT_FIELD_MAPPING) == {
        "MG_VALIDATION": "catch_all",
        "MG_RISK": "medium",
    }
    renamed = {**rules.DEFAULT_FIELD_MAPPING, "validation_risk": None, "validation_result": "MGV"}
    assert rules.brevo_attributes(fields, renamed) == {"MGV": "catch_all"}
    assert rules.FIELD_TYPES["validation_result"] == rules.FIELD_TYPES["validation_risk"] == "text"
