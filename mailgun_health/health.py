"""The verdicts, as plain functions over the tap's records (no I/O, no HTML).

From `domains`, `domain_metrics` and `tag_metrics` records (day resolution):
- per domain and day, four rates: delivered and hard bounces of accepted mail, spam
  complaints and unsubscribes of delivered mail;
- the same over the whole window, which is what a threshold is judged on (a day of 40
  messages with one complaint is 2.5 %: a single day is shown, not judged);
- DNS authentication as Mailgun checked it (SPF, DKIM, MX, tracking CNAME);
- the tags with the worst rates over the window;
- findings: `fail` when a published limit is crossed or a required DNS record is invalid,
  `warn` for a target crossed, a day over a limit, or a DNS record not valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from mailgun_health.thresholds import REQUIRED_DNS, thresholds_for
from tap_mailgun.records import DNS_CHECKS


@dataclass(frozen=True)
class Metric:
    """A rate: which count over which count."""

    key: str
    title: str
    numerator: str
    denominator: str


METRICS = (
    Metric("delivered_rate", "Delivered (of accepted)", "delivered_count", "accepted_count"),
    Metric(
        "hard_bounce_rate", "Hard bounces (of accepted)", "hard_bounces_count", "accepted_count"
    ),
    Metric(
        "complaint_rate", "Spam complaints (of delivered)", "complained_count", "delivered_count"
    ),
    Metric(
        "unsubscribe_rate", "Unsubscribes (of delivered)", "unsubscribed_count", "delivered_count"
    ),
)
COUNTS = tuple(sorted({c for m in METRICS for c in (m.numerator, m.denominator)}))
WORST_TAGS = 5


@dataclass
class Account:
    """What the tap read: the three streams' records."""

    domains: list[dict[str, Any]] = field(default_factory=list)
    domain_metrics: list[dict[str, Any]] = field(default_factory=list)
    tag_metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One verdict: `fail` (exit 1) or `warn`."""

    level: str
    text: str


@dataclass
class Series:
    """One rate of one domain: per day (None: nothing to divide by) and over the window."""

    metric: Metric
    days: list[date]
    daily: list[float | None]
    numerator: int
    denominator: int

    @property
    def overall(self) -> float | None:
        """The rate over the whole window."""
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True)
class TagRates:
    """A tag's rates over the window."""

    tag: str
    accepted: int
    rates: dict[str, float | None]


@dataclass
class DomainHealth:
    """Everything the report says about one domain."""

    name: str
    state: str
    dns: dict[str, str]
    series: dict[str, Series]
    worst_tags: list[TagRates]
    findings: list[Finding]

    @property
    def status(self) -> str:
        """`crossed` (a fail), `watch` (a warning) or `healthy`."""
        levels = {f.level for f in self.findings}
        return "crossed" if "fail" in levels else ("watch" if "warn" in levels else "healthy")


def window(today: date, days: int) -> list[date]:
    """The `days` days ending today, oldest first."""
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def _day(record: dict[str, Any]) -> date | None:
    value = record.get("time")
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).date()


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _totals(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        for count in COUNTS:
            totals[count] += int(row.get(count) or 0)
    return totals


def assess(account: Account, today: date, days: int = 30) -> list[DomainHealth]:
    """The health of every active domain (and any with metrics), by name."""
    span = window(today, days)
    in_window = set(span)
    by_day: dict[str, dict[date, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in account.domain_metrics:
        day = _day(row)
        if day in in_window and day is not None:
            by_day[str(row.get("domain"))][day].append(row)
    by_tag: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in account.tag_metrics:
        if _day(row) in in_window:
            by_tag[str(row.get("domain"))][str(row.get("tag"))].append(row)
    records = {str(d["name"]): d for d in account.domains if d.get("name")}
    names = sorted({n for n, d in records.items() if d.get("state") == "active"} | set(by_day))
    return [
        _domain(name, records.get(name, {}), span, by_day[name], by_tag[name]) for name in names
    ]


def _domain(
    name: str,
    record: dict[str, Any],
    span: list[date],
    days: dict[date, list[dict[str, Any]]],
    tags: dict[str, list[dict[str, Any]]],
) -> DomainHealth:
    daily_totals = {day: _totals(rows) for day, rows in days.items()}
    whole = _totals(row for rows in days.values() for row in rows)
    series = {
        m.key: Series(
            m,
            span,
            [
                _ratio(daily_totals[d][m.numerator], daily_totals[d][m.denominator])
                if d in daily_totals
                else None
                for d in span
            ],
            whole[m.numerator],
            whole[m.denominator],
        )
        for m in METRICS
    }
    dns = {check: str((record.get("dns") or {}).get(check) or "unknown") for check in DNS_CHECKS}
    return DomainHealth(
        name,
        str(record.get("state") or "unknown"),
        dns,
        series,
        worst_tags(tags),
        findings(series, dns),
    )


def worst_tags(tags: dict[str, list[dict[str, Any]]], limit: int = WORST_TAGS) -> list[TagRates]:
    """The tags with the highest complaint, then hard-bounce, then unsubscribe rate."""
    rated = []
    for tag, rows in tags.items():
        totals = _totals(rows)
        rates = {m.key: _ratio(totals[m.numerator], totals[m.denominator]) for m in METRICS}
        rated.append(TagRates(tag, totals["accepted_count"], rates))
    order = ("complaint_rate", "hard_bounce_rate", "unsubscribe_rate")
    rated.sort(key=lambda t: (*(-(t.rates[k] or 0.0) for k in order), t.tag))
    return rated[:limit]


def _percent(value: float) -> str:
    return f"{value * 100:.2f} %"


def findings(series: dict[str, Series], dns: dict[str, str]) -> list[Finding]:
    """What crosses a published threshold (fail: a limit; warn: a target or a single day),
    and DNS records that are not valid (fail when Gmail and Yahoo require them)."""
    found: list[Finding] = []
    for key, rates in series.items():
        overall = rates.overall
        for threshold in thresholds_for(key):
            if overall is not None and overall >= threshold.value:
                level = "fail" if threshold.kind == "limit" else "warn"
                found.append(
                    Finding(
                        level,
                        f"{rates.metric.title}: {_percent(overall)} over {len(rates.days)} "
                        f"days, at or above {threshold.label}",
                    )
                )
                break  # the strictest threshold crossed says it; the lower one adds nothing
            if threshold.kind == "limit":
                over = sum(1 for r in rates.daily if r is not None and r >= threshold.value)
                if over:
                    found.append(
                        Finding(
                            "warn",
                            f"{rates.metric.title}: {over} day(s) at or above {threshold.label}",
                        )
                    )
    for check, state in dns.items():
        if state == "valid":
            continue
        required = check in REQUIRED_DNS
        level = "fail" if required and state == "invalid" else "warn"
        why = " (Gmail and Yahoo require SPF and DKIM)" if required else ""
        found.append(Finding(level, f"DNS {check.upper().replace('_', ' ')} {state}{why}"))
    return found
