"""Realistic Mailgun traffic, seeded and deterministic, for the fakes, the sandbox and benchmarks.

A `Traffic` is a small simulated sending business: recipients with their own habits (some
engage, some never open, some addresses do not exist, some mailboxes are full, a few people
complain), two kinds of domain (transactional mail and newsletters), tags, and mailing lists.
From a `TrafficSpec` it produces raw Mailgun events exactly as the events API returns them
(dashed keys, float `timestamp`, `delivery-status`, `message.headers.message-id`,
`user-variables`, `envelope`, ...), consistent per message: every message is `accepted`, then
`delivered` or `failed` (temporary failures are retried), and only delivered mail is opened,
clicked, complained about or unsubscribed from. The suppressions Mailgun would keep follow
from those events (a permanent bounce makes a bounce, a complaint a complaint, an unsubscribe
an unsubscribe, each with an RFC 2822 `created_at`), and later mail to a suppressed address is
dropped by Mailgun (`failed`, reason `suppress-bounce` and so on), as the real service does.

The same spec always gives the same traffic. `until` cuts the world at a moment without
changing anything before it, so a sandbox whose clock moves forward sees the old traffic
unchanged plus the new: what an incremental pipeline must handle.

Events are produced by a generator, message by message in sending order (each message's
events in time order), so a million events never sit in memory twice. Events of one message
share their `message` object: treat events as read-only.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakes.mailgun import FakeMailgun

TRANSACTIONAL_DOMAIN = "mg.example.com"
NEWSLETTER_DOMAIN = "news.example.org"
DEFAULT_DOMAINS = (TRANSACTIONAL_DOMAIN, NEWSLETTER_DOMAIN)


def _words(text: str) -> tuple[str, ...]:
    """A roster written as whitespace-separated words."""
    return tuple(text.split())


_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FIRST = _words("""
    Ada Alan Amara Anna Ben Chen Chloe Dana David Elena Emma Fatima Felix Grace Hana Hugo Ines
    Ivan Jack Julia Kai Karim Lea Leo Lina Luca Maya Mia Noah Nora Omar Priya Rosa Sam Sara
    Sofia Tom Yara Yuki Zoe
""")
_LAST = _words("""
    Andersen Bauer Costa Dubois Eriksen Fischer Garcia Hansen Ito Jansen Kowalski Lopez Martin
    Moreau Novak Okafor Petrov Quinn Rossi Schmidt Silva Tanaka Umar Varga Weber Xu Yilmaz Zhang
""")
_MAILBOX_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
_CITIES = (
    ("Berlin", "DE"),
    ("Lisbon", "PT"),
    ("Paris", "FR"),
    ("Austin", "US"),
    ("Toronto", "CA"),
    ("Osaka", "JP"),
    ("Lagos", "NG"),
    ("Madrid", "ES"),
)
_PLANS = ("free", "starter", "pro", "enterprise")
_CLIENTS = (
    {
        "client-type": "mobile browser",
        "client-os": "iOS",
        "device-type": "mobile",
        "client-name": "Mobile Safari",
        "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148",
    },
    {
        "client-type": "email client",
        "client-os": "Windows",
        "device-type": "desktop",
        "client-name": "Outlook 2019",
        "user-agent": "Microsoft Outlook 16.0",
    },
    {
        "client-type": "browser",
        "client-os": "macOS",
        "device-type": "desktop",
        "client-name": "Chrome",
        "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/131.0",
    },
    {
        "client-type": "mobile browser",
        "client-os": "Android",
        "device-type": "mobile",
        "client-name": "Chrome Mobile",
        "user-agent": "Mozilla/5.0 (Linux; Android 15) Chrome/131.0 Mobile",
    },
)
_SENDING_IPS = ("198.51.100.17", "198.51.100.42", "203.0.113.9")
_FLAGS = {
    "is-routed": False,
    "is-authenticated": True,
    "is-system-test": False,
    "is-test-mode": False,
}


@dataclass(frozen=True)
class Campaign:
    """A kind of mail one domain sends: its tag, subject, links and how engaging it is."""

    tag: str
    subject: str
    urls: tuple[str, ...]
    open_rate: float
    click_rate: float
    unsubscribable: bool


_CAMPAIGNS: dict[str, tuple[Campaign, ...]] = {
    "transactional": (
        Campaign(
            "receipt", "Your receipt", ("https://shop.example.com/orders",), 0.55, 0.08, False
        ),
        Campaign(
            "password-reset",
            "Reset your password",
            ("https://app.example.com/reset",),
            0.8,
            0.6,
            False,
        ),
        Campaign(
            "welcome",
            "Welcome aboard",
            ("https://app.example.com/start", "https://docs.example.com/guide"),
            0.7,
            0.3,
            False,
        ),
    ),
    "newsletter": (
        Campaign(
            "newsletter",
            "This month at Example",
            ("https://blog.example.org/latest", "https://blog.example.org/events"),
            0.35,
            0.12,
            True,
        ),
        Campaign(
            "promo",
            "20% off this week",
            ("https://shop.example.com/sale",),
            0.25,
            0.08,
            True,
        ),
    ),
}

# Temporary and permanent failures as receiving servers phrase them.
_TEMPORARY_FAILURES = (
    (452, "4.2.2 The email account that you tried to reach is over quota."),
    (421, "4.7.0 Try again later, closing connection."),
    (451, "4.3.0 Temporary local problem - please try later"),
)
_PERMANENT_FAILURES = (
    (550, "5.1.1 The email account that you tried to reach does not exist."),
    (550, "5.1.1 <{address}>: Recipient address rejected: User unknown"),
    (553, "5.1.3 Invalid recipient address"),
)
_SUPPRESSED_FAILURE = {
    "bounces": ("suppress-bounce", "Not delivering to previously bounced address"),
    "complaints": (
        "suppress-complaint",
        "Not delivering to a user who marked your messages as spam",
    ),
    "unsubscribes": ("suppress-unsubscribe", "Not delivering to unsubscribed address"),
}


@dataclass(frozen=True)
class Recipient:
    """A person the business mails, with the habits that shape their events."""

    address: str
    first_name: str
    last_name: str
    city: str
    country: str
    plan: str
    habit: str  # engaged, casual, dormant, invalid, full_mailbox, grumpy

    @property
    def name(self) -> str:
        """First and last name, as a mailing list shows it."""
        return f"{self.first_name} {self.last_name}"


# Share of recipients with each habit, and their per-message engagement multiplier.
_HABITS = (
    ("engaged", 0.25, 1.8),
    ("casual", 0.45, 1.0),
    ("dormant", 0.17, 0.05),
    ("invalid", 0.05, 0.0),
    ("full_mailbox", 0.04, 1.0),
    ("grumpy", 0.04, 0.8),
)


@dataclass
class TrafficSpec:
    """What traffic to make: a seeded world of `messages` sent over `days` from `start`.

    `until` cuts the world at a moment (exclusive): events, suppressions and list members
    after it are left out, and nothing before it depends on where the cut is.
    """

    seed: int = 2026
    start: datetime = field(
        default_factory=lambda: datetime(2026, 10, 1, tzinfo=timezone.utc)  # a fixed month
    )
    days: float = 30.0
    messages: int = 2000
    recipients: int = 300
    domains: tuple[str, ...] = DEFAULT_DOMAINS
    until: datetime | None = None

    @classmethod
    def for_events(cls, events: int, **kwargs: Any) -> TrafficSpec:
        """A spec sized to produce about `events` events (a message makes about 3)."""
        return cls(messages=max(1, round(events / 3.0)), **kwargs)

    @property
    def end(self) -> datetime:
        """The moment traffic stops: the end of the window or the cut, whichever is first."""
        window_end = self.start + timedelta(days=self.days)
        return min(window_end, self.until) if self.until else window_end


@dataclass(frozen=True)
class MailingList:
    """A Mailgun mailing list and its members, raw as the API lists them."""

    address: str
    name: str
    description: str
    members: tuple[dict[str, Any], ...]


class Traffic:
    """One simulated sending business, built from a `TrafficSpec`.

    `events()` yields `(domain, raw_event)`; while it runs it records the suppressions those
    events cause, available in `suppressions` once it is exhausted.
    """

    def __init__(self, spec: TrafficSpec) -> None:
        if not spec.domains:
            raise ValueError("TrafficSpec.domains needs at least one sending domain")
        self.spec = spec
        self.recipients = _make_recipients(random.Random(f"{spec.seed}:people"), spec.recipients)
        # (domain, kind) -> address -> raw suppression item, filled by events().
        self.suppressions: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        self.event_counts: dict[str, int] = defaultdict(int)

    # --- the domains and what they send ----------------------------------------------------
    def domain_kind(self, domain: str) -> str:
        """`transactional` for the first domain, `newsletter` for the others."""
        return "transactional" if domain == self.spec.domains[0] else "newsletter"

    def tags(self) -> Iterator[tuple[str, str, str]]:
        """`(domain, tag, description)` for every tag the domains use."""
        for domain in self.spec.domains:
            for campaign in _CAMPAIGNS[self.domain_kind(domain)]:
                yield domain, campaign.tag, f"{campaign.subject} ({self.domain_kind(domain)})"

    def mailing_lists(self) -> list[MailingList]:
        """A customers list on the first domain and a newsletter list on each other one."""
        rng = random.Random(f"{self.spec.seed}:lists")
        lists = []
        for domain in self.spec.domains:
            kind = self.domain_kind(domain)
            address = f"{'customers' if kind == 'transactional' else 'newsletter'}@{domain}"
            share = 0.6 if kind == "transactional" else 0.45
            members = tuple(
                _member(person, subscribed=rng.random() > 0.08)
                for person in self.recipients
                if person.habit != "invalid" and rng.random() < share
            )
            lists.append(
                MailingList(
                    address,
                    "Customers" if kind == "transactional" else "Newsletter",
                    f"{kind.capitalize()} mail from {domain}",
                    members,
                )
            )
        return lists

    # --- events ----------------------------------------------------------------------------
    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every event before the spec's end, message by message in sending order."""
        self.suppressions.clear()
        self.event_counts.clear()
        spec = self.spec
        rng = random.Random(f"{spec.seed}:events")
        start = spec.start.timestamp()
        span = spec.days * 86400.0
        cut = spec.end.timestamp()
        # (domain, address) -> (time, kind, tags) of the suppression that stops later mail.
        blocked: dict[tuple[str, str], tuple[float, str, tuple[str, ...]]] = {}
        for n in range(spec.messages):
            # Evenly spread sending times with jitter, busier in the day than at night.
            sent = start + (n + rng.random()) * span / spec.messages
            if sent >= cut:
                break
            sent = _daytime(sent, rng)
            domain = rng.choice(spec.domains)
            person = rng.choice(self.recipients)
            campaign = rng.choice(_CAMPAIGNS[self.domain_kind(domain)])
            for event, suppression in self._message(
                rng, n, sent, domain, person, campaign, blocked
            ):
                if float(event["timestamp"]) < cut:
                    self.event_counts[event["event"]] += 1
                    if suppression is not None:
                        self.suppressions[(domain, suppression[0])][person.address] = suppression[1]
                    yield domain, event

    def _message(
        self,
        rng: random.Random,
        n: int,
        sent: float,
        domain: str,
        person: Recipient,
        campaign: Campaign,
        blocked: dict[tuple[str, str], tuple[float, str, tuple[str, ...]]],
    ) -> Iterator[tuple[dict[str, Any], tuple[str, dict[str, Any]] | None]]:
        """The life of one message: its events in time order, each with the suppression it makes."""
        message = _message_object(rng, n, sent, domain, person, campaign)
        common = {
            "recipient": person.address,
            "recipient-domain": person.address.split("@", 1)[1],
            "tags": [campaign.tag],
            "campaigns": [],
            "user-variables": {"customer_id": f"cus_{_stable_number(person.address):06d}"},
            "flags": _FLAGS,
            "message": message,
        }
        envelope = {
            "transport": "smtp",
            "sender": f"bounce+{n:x}@{domain}",
            "sending-ip": rng.choice(_SENDING_IPS),
            "targets": person.address,
        }

        def event(kind: str, at: float, level: str = "info", **extra: Any) -> dict[str, Any]:
            item = {
                "id": "".join(rng.choices(_ID_ALPHABET, k=22)),
                "event": kind,
                "timestamp": round(at, 6),
                "log-level": level,
                **common,
            }
            item.update(extra)
            return item

        yield event("accepted", sent, method="HTTP", envelope=envelope), None
        at = sent + rng.uniform(0.5, 20.0)

        stopped = blocked.get((domain, person.address))
        if stopped is not None and stopped[0] < sent and _applies(stopped, campaign.tag):
            reason, text = _SUPPRESSED_FAILURE[stopped[1]]
            status = {"code": 605, "message": text, "description": text, "attempt-no": 1}
            yield (
                event(
                    "failed",
                    at,
                    "error",
                    severity="permanent",
                    reason=reason,
                    envelope=envelope,
                    **{"delivery-status": status},
                ),
                None,
            )
            return

        if person.habit == "invalid":
            code, text = rng.choice(_PERMANENT_FAILURES)
            text = text.format(address=person.address)
            bounce = event(
                "failed",
                at,
                "error",
                severity="permanent",
                reason="bounce",
                envelope=envelope,
                **{"delivery-status": _smtp_status(rng, code, text, attempt=1)},
            )
            blocked[(domain, person.address)] = (at, "bounces", ("*",))
            item = {
                "address": person.address,
                "code": str(code),
                "error": text,
                "created_at": _rfc2822(at),
            }
            yield bounce, ("bounces", item)
            return

        attempt = 1
        if person.habit == "full_mailbox" or rng.random() < 0.02:
            # Temporary failures are retried with growing delays; most get through eventually.
            for _ in range(rng.randint(1, 3)):
                code, text = rng.choice(_TEMPORARY_FAILURES)
                yield (
                    event(
                        "failed",
                        at,
                        "warn",
                        severity="temporary",
                        reason="generic",
                        envelope=envelope,
                        **{"delivery-status": _smtp_status(rng, code, text, attempt)},
                    ),
                    None,
                )
                attempt += 1
                at += rng.uniform(300.0, 3600.0) * attempt
            if person.habit == "full_mailbox" and rng.random() < 0.3:
                # Mailgun gives up after its retry window: a permanent failure, no suppression.
                status = _smtp_status(rng, 452, "4.2.2 Mailbox full; retries exhausted", attempt)
                yield (
                    event(
                        "failed",
                        at,
                        "error",
                        severity="permanent",
                        reason="old",
                        envelope=envelope,
                        **{"delivery-status": status},
                    ),
                    None,
                )
                return

        status = _smtp_status(rng, 250, "OK", attempt)
        yield event("delivered", at, envelope=envelope, **{"delivery-status": status}), None

        if person.habit == "grumpy" and campaign.unsubscribable and rng.random() < 0.3:
            # Marketing mail draws complaints, most from the inbox list, unopened (receipts
            # and password resets hardly ever do): the newsletter domain crosses Gmail's and
            # Yahoo's 0.3 %, the transactional one stays clear, as mailgun-health must tell.
            complained = at + rng.uniform(60.0, 7200.0)
            blocked[(domain, person.address)] = (complained, "complaints", ("*",))
            item = {"address": person.address, "created_at": _rfc2822(complained)}
            yield event("complained", complained, "warn"), ("complaints", item)
            return

        engagement = _HABIT_ENGAGEMENT[person.habit]
        if rng.random() >= campaign.open_rate * engagement:
            return
        seen = at + rng.expovariate(1 / 7200.0) + 5.0
        geo = {"country": person.country, "region": "Unknown", "city": person.city}
        client = rng.choice(_CLIENTS)
        ip = f"192.0.2.{rng.randint(1, 254)}"
        for _ in range(1 + (rng.random() < 0.3 * engagement)):
            yield event("opened", seen, geolocation=geo, ip=ip, **{"client-info": client}), None
            seen += rng.expovariate(1 / 20000.0) + 1.0
        if rng.random() < campaign.click_rate / max(campaign.open_rate, 0.01) * engagement:
            clicked = seen + rng.uniform(2.0, 120.0)
            for url in rng.sample(campaign.urls, k=rng.randint(1, len(campaign.urls))):
                extra = {"geolocation": geo, "ip": ip, "url": url, "client-info": client}
                yield event("clicked", clicked, **extra), None
                clicked += rng.uniform(5.0, 300.0)
            seen = clicked
        if person.habit == "grumpy" and campaign.unsubscribable and rng.random() < 0.25:
            complained = seen + rng.uniform(10.0, 600.0)
            blocked[(domain, person.address)] = (complained, "complaints", ("*",))
            item = {"address": person.address, "created_at": _rfc2822(complained)}
            yield event("complained", complained, "warn"), ("complaints", item)
        elif campaign.unsubscribable and rng.random() < 0.04 * (2.0 - engagement):
            left = seen + rng.uniform(10.0, 600.0)
            scope = ("*",) if rng.random() < 0.7 else (campaign.tag,)
            blocked[(domain, person.address)] = (left, "unsubscribes", scope)
            item = {"address": person.address, "tags": list(scope), "created_at": _rfc2822(left)}
            unsubscribed = event(
                "unsubscribed", left, geolocation=geo, ip=ip, **{"client-info": client}
            )
            yield unsubscribed, ("unsubscribes", item)


_HABIT_ENGAGEMENT = {name: engagement for name, _, engagement in _HABITS}


def load(fake: FakeMailgun, traffic: Traffic) -> dict[str, int]:
    """Load the whole world into a fake Mailgun; returns how many of each thing went in."""
    by_domain: dict[str, list[dict[str, Any]]] = {domain: [] for domain in traffic.spec.domains}
    for domain, event in traffic.events():
        by_domain[domain].append(event)
    counts: dict[str, int] = defaultdict(int)
    for domain, events in by_domain.items():
        fake.add_domain(domain)
        fake.add_events(domain, events)
        counts["events"] += len(events)
    for (domain, kind), items in traffic.suppressions.items():
        for item in items.values():
            fake.add_suppression(domain, kind, item)
            counts[kind] += 1
    for person in traffic.recipients:
        if person.habit == "invalid":  # what Mailgun's validation says of a dead mailbox
            fake.set_verdict(person.address, "undeliverable", reason=["mailbox_does_not_exist"])
    for domain, tag, description in traffic.tags():
        fake.add_tag(domain, tag, description)
        counts["tags"] += 1
    for mailing_list in traffic.mailing_lists():
        fake.add_list(
            mailing_list.address, name=mailing_list.name, description=mailing_list.description
        )
        counts["lists"] += 1
        for member in mailing_list.members:
            fake.add_member(mailing_list.address, member)
            counts["list_members"] += 1
    return dict(counts)


# --- small pure helpers -------------------------------------------------------------------
def _make_recipients(rng: random.Random, count: int) -> tuple[Recipient, ...]:
    """`count` distinct people; their habits follow `_HABITS`' shares."""
    habits = [name for name, _, _ in _HABITS]
    weights = [share for _, share, _ in _HABITS]
    people = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, country = rng.choice(_CITIES)
        mailbox = _MAILBOX_DOMAINS[i % len(_MAILBOX_DOMAINS)]
        address = f"{first}.{last}.{i}@{mailbox}".lower()
        habit = rng.choices(habits, weights)[0]
        people.append(Recipient(address, first, last, city, country, rng.choice(_PLANS), habit))
    return tuple(people)


def _member(person: Recipient, *, subscribed: bool) -> dict[str, Any]:
    """A raw mailing-list member: name plus vars as a CRM would fill them."""
    return {
        "address": person.address,
        "name": person.name,
        "vars": {
            "first_name": person.first_name,
            "last_name": person.last_name,
            "plan": person.plan,
            "city": person.city,
        },
        "subscribed": subscribed,
    }


def _message_object(
    rng: random.Random, n: int, sent: float, domain: str, person: Recipient, campaign: Campaign
) -> dict[str, Any]:
    """The `message` part every event of one message shares."""
    stamp = datetime.fromtimestamp(sent, tz=timezone.utc).strftime("%Y%m%d%H%M%S")
    return {
        "headers": {
            "to": f"{person.name} <{person.address}>",
            "message-id": f"{stamp}.{n}.{rng.randrange(1 << 32):08x}@{domain}",
            "from": f"Example <hello@{domain}>",
            "subject": campaign.subject,
        },
        "attachments": [],
        "size": rng.randint(4_000, 60_000),
    }


def _smtp_status(rng: random.Random, code: int, text: str, attempt: int) -> dict[str, Any]:
    """A `delivery-status` as Mailgun reports a receiving server's answer."""
    return {
        "tls": True,
        "mx-host": "mx.example.net",
        "code": code,
        "description": "" if code == 250 else text,
        "session-seconds": round(rng.uniform(0.1, 3.0), 3),
        "utf8": True,
        "attempt-no": attempt,
        "message": text,
        "certificate-verified": True,
    }


def _applies(stopped: tuple[float, str, tuple[str, ...]], tag: str) -> bool:
    """Whether a suppression stops mail with this tag (unsubscribes can be per tag)."""
    return "*" in stopped[2] or tag in stopped[2]


def _daytime(epoch: float, rng: random.Random) -> float:
    """Move most night-time sends (00:00-06:00 UTC) into the working day of the same date."""
    hour = (epoch % 86400.0) / 3600.0
    if hour < 6.0 and rng.random() < 0.7:
        return epoch + rng.uniform(6.0, 12.0) * 3600.0
    return epoch


def _stable_number(text: str) -> int:
    """A small number derived from text, stable across processes (unlike hash())."""
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % 1_000_000


def _rfc2822(epoch: float) -> str:
    """Mailgun's `created_at` format, e.g. `Fri, 21 Oct 2011 11:02:55 UTC`."""
    moment = datetime.fromtimestamp(math.floor(epoch), tz=timezone.utc)
    return format_datetime(moment, usegmt=True).replace("GMT", "UTC")
