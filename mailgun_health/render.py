"""The report as one HTML page that opens offline: inline CSS, inline SVG charts, no script,
no font, no image, no link to anything but the cited sources."""

from __future__ import annotations

from datetime import date, datetime
from html import escape
from typing import TYPE_CHECKING

from mailgun_health.thresholds import DNS_SOURCES, THRESHOLDS, thresholds_for

if TYPE_CHECKING:
    from mailgun_health.health import DomainHealth, Series

WIDTH, HEIGHT = 440, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 28
STATUS_WORDS = {
    "healthy": "healthy",
    "watch": "watch: a warning",
    "crossed": "a threshold crossed",
}
STYLE = "".join(
    (
        'body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;',
        "margin:24px;color:#1d2330;background:#f6f7f9}",
        "h1{font-size:22px;margin:0 0 4px}",
        "h2{font-size:18px;margin:0}",
        ".meta{color:#5a6372;margin-bottom:18px}",
        "section.domain{background:#fff;border:1px solid #dde1e7;border-radius:8px;",
        "padding:16px 18px;margin:0 0 20px}",
        ".head{display:flex;align-items:center;gap:12px;margin-bottom:10px}",
        ".badge{border-radius:12px;padding:2px 10px;font-size:12px;font-weight:600;color:#fff}",
        ".healthy{background:#2e7d4f}",
        ".watch{background:#b7791f}",
        ".crossed{background:#c0392b}",
        ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px}",
        "figure{margin:0;border:1px solid #eceff3;border-radius:6px;padding:6px 8px}",
        "figcaption{font-weight:600;font-size:13px}",
        "figcaption span{font-weight:400;color:#5a6372}",
        "table{border-collapse:collapse;margin:8px 0}",
        "td,th{border-bottom:1px solid #eceff3;padding:3px 10px 3px 0;text-align:left;",
        "font-size:13px}",
        ".valid{color:#2e7d4f}",
        ".invalid{color:#c0392b;font-weight:600}",
        ".unknown{color:#b7791f}",
        "ul.findings{margin:6px 0 10px;padding-left:18px}",
        "li.fail{color:#c0392b}",
        "li.warn{color:#8a5a00}",
        ".cols{display:flex;gap:36px;flex-wrap:wrap}",
        "svg text{font-size:11px;fill:#5a6372}",
    )
)


def _percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def chart(series: Series) -> str:
    """One rate per day as an inline SVG line chart, with its published thresholds drawn."""
    lines = thresholds_for(series.metric.key)
    values = [v for v in series.daily if v is not None]
    if series.metric.key == "delivered_rate":
        top = 1.0
    else:
        top = max([*values, *(t.value for t in lines), 0.001]) * 1.25
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(series.days) - 1, 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / count

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(v, top) / top)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f"<title>{escape(series.metric.title)} per day</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        'stroke="#dde1e7"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = top * fraction
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{_percent(value, 2 if top < 0.1 else 0)}</text>"
        )
    for i, anchor in ((0, "start"), (count // 2, "middle"), (count, "end")):
        if i < len(series.days):
            parts.append(
                f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                f"{series.days[i]:%b %d}</text>"
            )
    for threshold in lines:
        colour = "#c0392b" if threshold.kind == "limit" else "#b7791f"
        level = y(threshold.value)
        # Limits are labelled above their line at the right, targets below it at the left:
        # close thresholds on a tall scale would otherwise print over each other.
        if threshold.kind == "limit":
            place = f'x="{WIDTH - RIGHT - 4}" y="{level - 4:.1f}" text-anchor="end"'
        else:
            place = f'x="{LEFT + 4}" y="{level + 12:.1f}" text-anchor="start"'
        parts.append(
            f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}"'
            f' y2="{level:.1f}" stroke="{colour}" stroke-dasharray="5 4"/>'
            f'<text {place} style="fill:{colour}">{escape(threshold.label)}</text>'
        )
    runs: list[list[str]] = [[]]
    for i, rate in enumerate(series.daily):
        if rate is None:
            runs.append([])
            continue
        runs[-1].append(f"{x(i):.1f},{y(rate):.1f}")
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(rate):.1f}" r="2.5" fill="#2b6cb0">'
            f"<title>{series.days[i]:%Y-%m-%d}: {_percent(rate)}</title></circle>"
        )
    for run in runs:
        if len(run) > 1:
            parts.append(
                f'<polyline class="rate" points="{" ".join(run)}" fill="none" '
                'stroke="#2b6cb0" stroke-width="1.6"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _domain(health: DomainHealth) -> str:
    findings = (
        "".join(f'<li class="{f.level}">{escape(f.text)}</li>' for f in health.findings)
        or "<li>Nothing crosses a published threshold.</li>"
    )
    dns_rows = "".join(
        f"<tr><td>{escape(check.upper().replace('_', ' '))}</td>"
        f'<td class="{escape(state)}">{escape(state)}</td></tr>'
        for check, state in health.dns.items()
    )
    tag_rows = (
        "".join(
            f"<tr><td>{escape(tag.tag)}</td><td>{tag.accepted}</td>"
            + "".join(
                f"<td>{_percent(tag.rates[k])}</td>"
                for k in ("complaint_rate", "hard_bounce_rate", "unsubscribe_rate")
            )
            + "</tr>"
            for tag in health.worst_tags
        )
        or '<tr><td colspan="5">No tagged mail in the window.</td></tr>'
    )
    figures = "".join(
        f"<figure><figcaption>{escape(s.metric.title)} "
        f"<span>{_percent(s.overall)} over the window</span></figcaption>{chart(s)}</figure>"
        for s in health.series.values()
    )
    return (
        f'<section class="domain" id="{escape(health.name)}"><div class="head">'
        f"<h2>{escape(health.name)}</h2>"
        f'<span class="badge {health.status}">{STATUS_WORDS[health.status]}</span></div>'
        f'<ul class="findings">{findings}</ul>'
        f'<div class="charts">{figures}</div>'
        '<div class="cols"><div><h3>DNS authentication</h3>'
        f"<table><tr><th>record</th><th>Mailgun's check</th></tr>{dns_rows}</table></div>"
        "<div><h3>Tags with the worst rates</h3><table><tr><th>tag</th><th>accepted</th>"
        "<th>complaints</th><th>hard bounces</th><th>unsubscribes</th></tr>"
        f"{tag_rows}</table></div></div></section>"
    )


def _sources() -> str:
    items = []
    for threshold in THRESHOLDS:
        cited = ", ".join(
            f'<a href="{escape(s.url)}">{escape(s.name)}</a>' for s in threshold.sources
        )
        items.append(f"<li>Spam complaint rate {escape(threshold.label)}: {cited}.</li>")
    dns = ", ".join(f'<a href="{escape(s.url)}">{escape(s.name)}</a>' for s in DNS_SOURCES)
    items.append(f"<li>SPF and DKIM required of bulk senders: {dns}.</li>")
    items.append(
        "<li>Hard bounces, unsubscribes and delivery: neither Gmail nor Yahoo publishes a "
        "rate, so those charts draw none and never fail the check.</li>"
    )
    return f"<h2>Thresholds and their sources</h2><ul>{''.join(items)}</ul>"


def page(domains: list[DomainHealth], generated: datetime, until: date, days: int) -> str:
    """The whole report."""
    crossed = sum(1 for d in domains if d.status == "crossed")
    verdict = (
        f"{crossed} of {len(domains)} domain(s) cross a threshold"
        if crossed
        else f"all {len(domains)} domain(s) within the published thresholds"
    )
    body = "".join(_domain(d) for d in domains)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Mailgun domain health {generated:%Y-%m-%d}</title><style>{STYLE}</style>"
        "</head><body><h1>Mailgun domain health</h1>"
        f'<div class="meta">{escape(verdict)}. Daily rates over the {days} days to '
        f"{until:%Y-%m-%d}, "
        f"from Mailgun's metrics; written {generated:%Y-%m-%d %H:%M} UTC by mailgun-health.</div>"
        f"{body}{_sources()}</body></html>"
    )
