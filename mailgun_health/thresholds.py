"""The published thresholds the report draws and judges by, each with its source.

Only what mailbox providers publish is used. Gmail and Yahoo publish a spam-complaint rate
and require SPF and DKIM of bulk senders; neither publishes a number for bounces, unsubscribes
or delivery, so those charts show the rates with no line and never fail the check.
"""

from __future__ import annotations

from dataclasses import dataclass

GMAIL_GUIDELINES = "https://support.google.com/a/answer/81126"
YAHOO_GUIDELINES = "https://senders.yahooinc.com/best-practices/"


@dataclass(frozen=True)
class Source:
    """Who publishes a threshold, and where."""

    name: str
    url: str


@dataclass(frozen=True)
class Threshold:
    """A rate a domain must stay under (`limit`: crossing it fails the check) or should stay
    under (`target`: crossing it is a warning)."""

    metric: str
    value: float  # a ratio: 0.003 is 0.3 %
    kind: str  # limit or target
    label: str
    sources: tuple[Source, ...]


GMAIL = Source("Google, Email sender guidelines (Gmail)", GMAIL_GUIDELINES)
YAHOO = Source("Yahoo, Sender Best Practices", YAHOO_GUIDELINES)

THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(
        "complaint_rate",
        0.003,
        "limit",
        "0.3 %: never reach (Gmail, Yahoo)",
        (GMAIL, YAHOO),
    ),
    Threshold("complaint_rate", 0.001, "target", "0.1 %: stay below (Gmail)", (GMAIL,)),
)
# DNS records both Gmail and Yahoo require of bulk senders: an invalid one fails the check.
REQUIRED_DNS = ("spf", "dkim")
DNS_SOURCES = (GMAIL, YAHOO)


def thresholds_for(metric: str) -> tuple[Threshold, ...]:
    """The thresholds drawn on a metric's chart (none for most)."""
    return tuple(t for t in THRESHOLDS if t.metric == metric)
