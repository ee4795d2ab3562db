"""The rules that decide what Brevo gets, as plain functions over plain data.

This module is the specification in code: which address is valid, what one event or one
suppression says about its contact, how two things known about a contact merge (the store
applies exactly this), which events count as engagement, what a contact's rates, score, bounce
type and lists are, when a contact is blocklisted, when it is withheld from Brevo (Mailgun's
validation says it cannot receive mail), and which Brevo event a Mailgun event becomes. No
HTTP, no SQL, no Singer here; everything is tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

# Canonical contact fields -> Brevo attribute, as users of the Mailgun/Brevo pair know them.
DEFAULT_FIELD_MAPPING: dict[str, str | None] = {
    "email": "email",
    "first_name": "FIRSTNAME",
    "last_name": "LASTNAME",
    "open_rate": "MG_OPEN_RATE",
    "click_rate": "MG_CLICK_RATE",
    "last_delivered": "MG_LAST_DELIVERED",
    "bounce_type": "MG_BOUNCE_TYPE",
    "engagement_score": "MG_ENGAGEMENT",
    "unsubscribed": "MG_UNSUBSCRIBED",
    "validation_result": "MG_VALIDATION",
    "validation_risk": "MG_RISK",
}
# The Brevo attribute type each canonical field needs (Brevo drops values of the wrong type).
FIELD_TYPES: dict[str, str] = {
    "first_name": "text",
    "last_name": "text",
    "open_rate": "float",
    "click_rate": "float",
    "last_delivered": "date",
    "bounce_type": "text",
    "engagement_score": "float",
    "unsubscribed": "boolean",
    "validation_result": "text",
    "validation_risk": "text",
}
DEFAULT_EVENT_NAMES: dict[str, str] = {
    "delivered": "email_delivered",
    "opened": "email_opened",
    "clicked": "email_clicked",
    "hard_bounced": "email_hard_bounced",
    "soft_bounced": "email_soft_bounced",
    "complained": "email_complained",
    "unsubscribed": "email_unsubscribed",
    "suppressed": "email_suppressed",
}
# What Mailgun means by a permanent failure with these reasons: it declined to send to an
# address that unsubscribed or complained earlier. That says the contact unsubscribed or
# complained, never that the address bounces.
SUPPRESSION_REASONS: dict[str, str] = {
    "suppress-unsubscribe": "unsubscribed",
    "suppress-complaint": "complained",
}
# Raised whenever a rule changes what a contact or an event looks like in Brevo: the store
# keeps the version its contacts were written under, and a store of an older one is corrected
# (see `corrected_contact`) and rewritten once. 2: suppress-* failures are not hard bounces.
RULES_VERSION = 2
BLOCKLIST_REASONS = ("hard_bounce", "complaint", "unsubscribe")
# Mailgun's validation results (the `validation` the mailgun-validate mapper adds) that say
# never to mail the address: a contact with one is never created in Brevo (see `withheld`).
WITHHELD_RESULTS = frozenset({"undeliverable", "do_not_send"})
LIST_ROLES = ("engaged", "bounced", "complained")
# Mailgun events that count towards D (a message reached the inbox).
DELIVERY_EVENTS = frozenset({"delivered", "opened", "clicked"})
# Mailgun events that make a contact engaged (the `engaged` list).
ENGAGEMENT_EVENTS = frozenset({"opened", "clicked"})
# The flag each of tap-mailgun's suppression streams sets on the contact of its address.
SUPPRESSION_FLAGS: dict[str, str] = {
    "bounces": "hard_bounce",
    "complaints": "complained",
    "unsubscribes": "unsubscribed",
}

_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_CANONICAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
_RATE = Decimal("0.0001")
_SCORE = Decimal("0.1")


def normalize_email(value: Any) -> str | None:
    """The address trimmed and lower-cased, or None when it is not a valid email address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        return None
    return email


def is_valid_event_name(name: Any) -> bool:
    """Brevo's rule for event names: 1 to 255 of A-Z a-z 0-9 _ -."""
    return isinstance(name, str) and bool(_EVENT_NAME.match(name))


def iso_timestamp(value: Any) -> str | None:
    """A record's timestamp in one canonical form: UTC ISO-8601 with microseconds.

    The SDK may hand over a datetime (when the schema says date-time) or the tap's string; both
    become the same text, so an event's identity (id, timestamp) never depends on the path.
    """
    if isinstance(value, str) and _CANONICAL.match(value):
        return value  # tap-mailgun's own form: nothing to do (the common case)
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def event_identity(event_id: str, timestamp: str) -> tuple[str, str]:
    """An event's identity: its Mailgun id (unique only within a day) and its canonical
    timestamp cut to the millisecond.

    The same event comes with microseconds from the Events API and webhooks (a float of
    epoch seconds) and with milliseconds from the Logs API (`@timestamp`): cut to the
    millisecond, the three are one identity. Two events with one id in one millisecond are
    the same event (an id repeats only across days), so nothing distinct is merged.
    """
    return event_id, timestamp[:23] + "000" + timestamp[26:]


class Verdict(NamedTuple):
    """Mailgun's verdict on an address, as a record of the mailgun-validate mapper carries it."""

    result: str
    risk: str | None
    validated_at: str | None  # UTC ISO-8601: which of two verdicts is the later one


class EventFacts(NamedTuple):
    """What one Mailgun event contributes: to a contact's aggregates and to Brevo's events.

    A NamedTuple rather than a dataclass: one is built per input record, on the hot path.
    """

    key: tuple[str, str]  # event_identity: (Mailgun event id, timestamp to the millisecond)
    email: str
    event: str
    message_id: str | None
    day: str  # YYYY-MM-DD (UTC) of the event
    hard_bounce: bool
    soft_bounce: bool
    complained: bool
    unsubscribed: bool
    brevo_event: dict[str, Any] | None
    verdict: Verdict | None = None


class ContactState(NamedTuple):
    """What is known of one contact apart from its messages: what the store keeps and merges.

    A NamedTuple: one is made per event folded in, on the hot path.
    """

    email: str
    last_delivered: str | None = None  # YYYY-MM-DD of the latest delivered event
    hard_bounce: bool = False
    soft_bounce: bool = False
    complained: bool = False
    unsubscribed: bool = False
    engaged: bool = False  # an opened or clicked event
    first_name: str | None = None
    last_name: str | None = None
    validation_result: str | None = None  # the latest Verdict, flat as the store keeps it
    validation_risk: str | None = None
    validated_at: str | None = None


@dataclass(frozen=True)
class ContactFacts:
    """Everything the engagement store knows about one contact; the input of every contact rule."""

    email: str
    delivered: int = 0  # |D|: messages with a delivered, opened or clicked event
    opened: int = 0  # |O|
    clicked: int = 0  # |C|
    last_delivered: str | None = None
    hard_bounce: bool = False
    soft_bounce: bool = False
    complained: bool = False
    unsubscribed: bool = False
    engaged: bool = False
    first_name: str | None = None
    last_name: str | None = None
    validation_result: str | None = None
    validation_risk: str | None = None


def record_verdict(record: Mapping[str, Any]) -> Verdict | None:
    """The verdict a record carries in `validation`; None when it carries none (not validated:
    no mapper, budget spent, Mailgun unavailable), which never erases a verdict known before."""
    validation = record.get("validation")
    if not isinstance(validation, Mapping):
        return None
    result = _text(validation.get("result"))
    if result is None:
        return None
    return Verdict(
        result, _text(validation.get("risk")), iso_timestamp(validation.get("validated_at"))
    )


def with_verdict(state: ContactState, verdict: Verdict | None) -> ContactState:
    """The contact state carrying `verdict` (unchanged when there is none)."""
    if verdict is None:
        return state
    return state._replace(
        validation_result=verdict.result,
        validation_risk=verdict.risk,
        validated_at=verdict.validated_at,
    )


def event_contact(facts: EventFacts) -> ContactState:
    """What one event says about its contact: its flags, its day if it is a delivery, and the
    verdict on its address if the record carries one."""
    return with_verdict(
        ContactState(
            email=facts.email,
            last_delivered=facts.day if facts.event == "delivered" else None,
            hard_bounce=facts.hard_bounce,
            soft_bounce=facts.soft_bounce,
            complained=facts.complained,
            unsubscribed=facts.unsubscribed,
            engaged=facts.event in ENGAGEMENT_EVENTS,
        ),
        facts.verdict,
    )


def suppresses(facts: EventFacts) -> bool:
    """Whether an event suppresses its contact: a hard bounce, a complaint or an unsubscribe,
    Mailgun declining to send to one included. These are what the fast lane applies at once.
    """
    return facts.hard_bounce or facts.complained or facts.unsubscribed


def message_marks(facts: EventFacts) -> tuple[bool, bool] | None:
    """(opened, clicked) for the event's message; None when the event is not about a delivery.

    A message counts towards D once it has any delivery event, towards O and C once opened or
    clicked; marks only ever turn on (a message's marks merge with `or`).
    """
    if facts.event not in DELIVERY_EVENTS or not facts.message_id:
        return None
    return facts.event == "opened", facts.event == "clicked"


def suppression_contact(stream: str, email: str, verdict: Verdict | None = None) -> ContactState:
    """The contact of a suppression record: the flag its stream sets (SUPPRESSION_FLAGS), and
    the verdict on its address if the record carries one."""
    flag = SUPPRESSION_FLAGS[stream]
    state = ContactState(
        email,
        hard_bounce=flag == "hard_bounce",
        complained=flag == "complained",
        unsubscribed=flag == "unsubscribed",
    )
    return with_verdict(state, verdict)


def later_day(old: str | None, new: str | None) -> str | None:
    """The later of two YYYY-MM-DD days; an unknown day never replaces a known one."""
    if old is None:
        return new
    if new is None:
        return old
    return max(old, new)


def later_verdict(old: ContactState, new: ContactState) -> bool:
    """Whether `new`'s verdict replaces `old`'s: it has one, and it is not older (two verdicts
    that do not both say when they were made: the one read later wins)."""
    if new.validation_result is None:
        return False
    if old.validated_at is None or new.validated_at is None:
        return True
    return new.validated_at >= old.validated_at


def merge_contact(old: ContactState, new: ContactState) -> ContactState:
    """Fold what is newly known of a contact into what was known.

    Flags only ever turn on (nothing here un-bounces or re-subscribes anyone), the latest
    delivery wins, a name is replaced only by another name, never erased, and the latest
    verdict wins (`later_verdict`): a record not validated never erases one.
    """
    verdict = new if later_verdict(old, new) else old
    return ContactState(
        email=old.email,
        last_delivered=later_day(old.last_delivered, new.last_delivered),
        hard_bounce=old.hard_bounce or new.hard_bounce,
        soft_bounce=old.soft_bounce or new.soft_bounce,
        complained=old.complained or new.complained,
        unsubscribed=old.unsubscribed or new.unsubscribed,
        engaged=old.engaged or new.engaged,
        first_name=new.first_name if new.first_name is not None else old.first_name,
        last_name=new.last_name if new.last_name is not None else old.last_name,
        validation_result=verdict.validation_result,
        validation_risk=verdict.validation_risk,
        validated_at=verdict.validated_at,
    )


def fold_contacts(states: Iterable[ContactState]) -> dict[str, ContactState]:
    """Contact states by email, each the merge of that contact's states in order."""
    folded: dict[str, ContactState] = {}
    for state in states:
        held = folded.get(state.email)
        folded[state.email] = state if held is None else merge_contact(held, state)
    return folded


def rate(part: int, whole: int) -> float | None:
    """part / whole rounded half-up to 4 decimals; None while nothing was delivered."""
    if whole <= 0:
        return None
    return float((Decimal(part) / Decimal(whole)).quantize(_RATE, rounding=ROUND_HALF_UP))


def engagement_score(open_rate: float, click_rate: float) -> float:
    """round(100 x (0.3 x open_rate + 0.7 x click_rate), 1), rounding half-up."""
    raw = 100 * (
        Decimal("0.3") * Decimal(str(open_rate)) + Decimal("0.7") * Decimal(str(click_rate))
    )
    return float(raw.quantize(_SCORE, rounding=ROUND_HALF_UP))


def bounce_type(facts: ContactFacts) -> str | None:
    """hard_bounce after a permanent failure or a bounces record; else soft_bounce if temporary."""
    if facts.hard_bounce:
        return "hard_bounce"
    if facts.soft_bounce:
        return "soft_bounce"
    return None


def contact_fields(facts: ContactFacts) -> dict[str, Any]:
    """The canonical fields of a contact; a field with nothing to say is left out, never erased.

    One exception: a contact that unsubscribed or complained and never bounced has bounce_type
    None (to be erased), as rules version 1 may have written hard_bounce for Mailgun declining
    to send to it (see `corrected_hard_bounce`).
    """
    fields: dict[str, Any] = {"email": facts.email}
    open_rate = rate(facts.opened, facts.delivered)
    click_rate = rate(facts.clicked, facts.delivered)
    if open_rate is not None and click_rate is not None:
        fields["open_rate"] = open_rate
        fields["click_rate"] = click_rate
        fields["engagement_score"] = engagement_score(open_rate, click_rate)
    optional = {
        "last_delivered": facts.last_delivered,
        "bounce_type": bounce_type(facts),
        "unsubscribed": True if facts.unsubscribed else None,
        "first_name": facts.first_name,
        "last_name": facts.last_name,
        "validation_result": facts.validation_result,
        "validation_risk": facts.validation_risk,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if "bounce_type" not in fields and (facts.unsubscribed or facts.complained):
        fields["bounce_type"] = None
    return fields


def brevo_attributes(
    fields: Mapping[str, Any], mapping: Mapping[str, str | None]
) -> dict[str, Any]:
    """Canonical fields renamed to Brevo attributes; fields mapped to null are not written."""
    attributes: dict[str, Any] = {}
    for name, value in fields.items():
        target = mapping.get(name)
        if target and target != "email":
            attributes[target] = value
    return attributes


def blocklisted(facts: ContactFacts, blocklist_on: frozenset[str]) -> bool:
    """emailBlacklisted is set after a hard bounce, a complaint or an unsubscribe (per setting).

    Nothing here ever answers "un-blocklist": the target never re-subscribes anyone.
    """
    return (
        (facts.hard_bounce and "hard_bounce" in blocklist_on)
        or (facts.complained and "complaint" in blocklist_on)
        or (facts.unsubscribed and "unsubscribe" in blocklist_on)
    )


def withheld(validation_result: str | None, known_to_brevo: bool) -> bool:
    """Whether a contact is kept out of Brevo: Mailgun's latest verdict says never to mail it
    (WITHHELD_RESULTS), and Brevo does not have it yet (the store knows what it sent).

    A contact Brevo has is not deleted, and still updated (its MG_VALIDATION too, so that a
    user can segment on it); one it does not have is never created, nor are its events sent,
    which could create it. A later verdict that allows mail lets it through.
    """
    return validation_result in WITHHELD_RESULTS and not known_to_brevo


def list_ids(facts: ContactFacts, lists: Mapping[str, int]) -> frozenset[int]:
    """The configured lists a contact belongs in: engaged, bounced (hard), complained."""
    wanted = {
        "engaged": facts.engaged,
        "bounced": facts.hard_bounce,
        "complained": facts.complained,
    }
    return frozenset(lists[role] for role, member in wanted.items() if member and role in lists)


def failure_kind(event: str, severity: Any, reason: Any) -> str | None:
    """What a Mailgun event is as a failure: hard_bounced, soft_bounced, suppressed, or None.

    A permanent failure is a hard bounce unless Mailgun declined to send because the address
    unsubscribed or complained earlier (SUPPRESSION_REASONS); bounce, delayed-bounce,
    suppress-bounce and any other permanent reason are hard bounces; temporary ones are soft.
    """
    if event != "failed":
        return None
    if severity != "permanent":
        return "soft_bounced"
    return (
        "suppressed"
        if isinstance(reason, str) and reason in SUPPRESSION_REASONS
        else "hard_bounced"
    )


def event_name_key(event: str, severity: Any, reason: Any = None) -> str | None:
    """Which of the `event_names` a Mailgun event becomes; None for events Brevo does not get."""
    if event == "failed":
        return failure_kind(event, severity, reason)
    if event in ("delivered", "opened", "clicked", "complained", "unsubscribed"):
        return event
    return None


def _headers(record: Mapping[str, Any]) -> Mapping[str, Any]:
    message = record.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    return headers if isinstance(headers, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def brevo_event(
    record: Mapping[str, Any], email: str, timestamp: str, names: Mapping[str, str]
) -> dict[str, Any] | None:
    """The Brevo event for one Mailgun event record, or None when it has no Brevo counterpart."""
    event = str(record.get("event"))
    key = event_name_key(event, record.get("severity"), record.get("reason"))
    if key is None:
        return None
    headers = _headers(record)
    properties: dict[str, Any] = {
        "mailgun_event_id": _text(record.get("id")),
        "message_id": _text(headers.get("message_id")),
        "subject": _text(headers.get("subject")),
        "domain": _text(record.get("domain")),
    }
    tags = record.get("tags")
    if isinstance(tags, list):
        properties["tags"] = [str(t) for t in tags]
    if event == "clicked":
        properties["url"] = _text(record.get("url"))
    if event == "failed":
        properties["severity"] = _text(record.get("severity"))
        properties["reason"] = _text(record.get("reason"))
    return {
        "event_name": names[key],
        "event_date": timestamp,
        "identifiers": {"email_id": email},
        "event_properties": {k: v for k, v in properties.items() if v is not None},
    }


def event_facts(record: Mapping[str, Any], names: Mapping[str, str] | None) -> EventFacts | str:
    """An events record as the facts it contributes, or the reason it is skipped.

    `names` is None when events_enabled is false: the event still counts for the contact.
    """
    email = normalize_email(record.get("recipient"))
    if email is None:
        return "invalid email"
    event_id = _text(record.get("id"))
    timestamp = iso_timestamp(record.get("timestamp"))
    event = _text(record.get("event"))
    if event_id is None or timestamp is None or event is None:
        return "invalid record (id, timestamp and event are required)"
    failure = failure_kind(event, record.get("severity"), record.get("reason"))
    suppressed_as = SUPPRESSION_REASONS[record["reason"]] if failure == "suppressed" else None
    return EventFacts(
        key=event_identity(event_id, timestamp),
        email=email,
        event=event,
        message_id=_text(_headers(record).get("message_id")),
        day=timestamp[:10],
        hard_bounce=failure == "hard_bounced",
        soft_bounce=failure == "soft_bounced",
        complained=event == "complained" or suppressed_as == "complained",
        unsubscribed=event == "unsubscribed" or suppressed_as == "unsubscribed",
        brevo_event=brevo_event(record, email, timestamp, names) if names is not None else None,
        verdict=record_verdict(record),
    )


def corrected_event(payload: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any] | None:
    """An event payload queued under rules version 1, renamed as the current rules name it;
    None when it needs no change. Only a suppression queued as a hard bounce does.
    """
    properties = payload.get("event_properties")
    properties = properties if isinstance(properties, Mapping) else {}
    kind = failure_kind("failed", properties.get("severity"), properties.get("reason"))
    if kind != "suppressed" or payload.get("event_name") == names["suppressed"]:
        return None
    return {**payload, "event_name": names["suppressed"]}


def suppression_evidence(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(email, "unsubscribed" or "complained"): what a queued suppression event says of its
    contact; None for any other event.
    """
    properties = payload.get("event_properties")
    identifiers = payload.get("identifiers")
    if not isinstance(properties, Mapping) or not isinstance(identifiers, Mapping):
        return None
    reason, email = properties.get("reason"), normalize_email(identifiers.get("email_id"))
    if failure_kind("failed", properties.get("severity"), reason) != "suppressed" or not email:
        return None
    return email, SUPPRESSION_REASONS[str(reason)]


def corrected_hard_bounce(hard_bounce: bool, unsubscribed: bool, complained: bool) -> bool:
    """The hard bounce flag of a contact written under rules version 1, as the current rules see it.

    Version 1 made every permanent failure a hard bounce, and the store kept the flag, not the
    reason. Mailgun declines to send (suppress-unsubscribe, suppress-complaint) only to an
    address that unsubscribed or complained, and once it has, it sends that address nothing
    that could bounce; so a hard bounce on a contact also unsubscribed or complained is the old
    misreading and is dropped. A real bounce seen again (the `bounces` stream, a bounce event)
    sets it back.
    """
    return hard_bounce and not (unsubscribed or complained)


def member_contact(record: Mapping[str, Any], email: str) -> ContactState:
    """The contact of a list member: its names (see `split_name`), and its verdict if any."""
    first_name, last_name = split_name(record)
    state = ContactState(email, first_name=first_name, last_name=last_name)
    return with_verdict(state, record_verdict(record))


def split_name(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """first_name, last_name of a list member: from its vars if present, else its name split."""
    variables = record.get("vars")
    variables = variables if isinstance(variables, Mapping) else {}
    name = _text(record.get("name"))
    first, _, last = (name or "").strip().partition(" ")
    return (
        _text(variables.get("first_name")) or _text(first),
        _text(variables.get("last_name")) or _text(last.strip()),
    )
