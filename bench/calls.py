"""API calls by endpoint, against the least the vendors' batch limits allow.

Pure functions over the requests a fake recorded: the harness hands them in, these rules
say what the minimum would have been for the same work, so "within 1.1x of the minimum"
is a number anyone can recompute from bench/results/*.json.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

# Brevo's documented limits (see specs/README.md and the spec's own text).
EVENTS_PER_BATCH = 200
EVENTS_BATCH_BYTES = 512 * 1024
IMPORT_BYTES = 8 * 1024 * 1024  # the "safe limit" Brevo recommends for one /contacts/import
LIST_EMAILS_PER_CALL = 150
# Brevo's general plan: 10 requests a second on contacts and on events (separate budgets).
BREVO_REQUESTS_PER_SECOND = 10
# Mailgun's page sizes: events at most 300 (the Logs API 100, account-wide); suppressions and
# tags 1000; mailing lists and their members 100 (the API returns no more than 100 members a
# call, whatever the limit).
EVENTS_PER_PAGE = 300
LOGS_PAGE = 100
LIST_PAGE = 1000
MEMBERS_PAGE = 100


@dataclass(frozen=True)
class Call:
    """One recorded request, reduced to what the accounting needs."""

    method: str
    path: str
    body: bytes = b""


_NUMBER = re.compile(r"^\d+$")


def endpoint(path: str) -> str:
    """A path as its endpoint template: ids, e-mails, domains and page tokens become names."""
    parts = path.strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        before = parts[i - 1] if i else ""
        if "@" in part or "%40" in part:
            out.append("{address}")
        elif _NUMBER.match(part):
            out.append("{id}")
        elif before == "attributes" and i + 1 < len(parts):
            out.append("{category}")
        elif i >= 2 and parts[i - 2] == "attributes":
            out.append("{name}")
        elif before == "events" and part != "batch":
            out.append("{page}")
        elif before == "processes":
            out.append("{id}")
        elif "." in part and before in {"v3", "domains"}:
            out.append("{domain}")
        else:
            out.append(part)
    return "/" + "/".join(out)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _events_batch_minimum(calls: list[Call]) -> int:
    events = 0
    payload = 0
    for call in calls:
        body = _json(call.body) or {}
        items = body.get("events") or []
        events += len(items)
        payload += sum(len(json.dumps(item, separators=(",", ":"))) for item in items)
    return max(math.ceil(events / EVENTS_PER_BATCH), math.ceil(payload / EVENTS_BATCH_BYTES))


def _import_minimum(calls: list[Call]) -> int:
    # Options such as listIds or emailBlacklist apply to a whole import, so contacts that
    # need different options cannot share a request: one budget per option combination.
    by_options: dict[str, int] = defaultdict(int)
    for call in calls:
        body = _json(call.body) or {}
        options = {k: v for k, v in body.items() if k not in {"jsonBody", "fileBody"}}
        contacts = body.get("jsonBody") or body.get("fileBody") or []
        size = len(json.dumps(contacts, separators=(",", ":")))
        by_options[json.dumps(options, sort_keys=True)] += size
    return sum(math.ceil(size / IMPORT_BYTES) for size in by_options.values())


def _list_change_minimum(calls: list[Call]) -> int:
    emails: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        body = _json(call.body) or {}
        for key in ("emails", "ids", "extIds"):
            emails[call.path].update(str(v) for v in body.get(key) or [])
    return sum(math.ceil(len(v) / LIST_EMAILS_PER_CALL) for v in emails.values())


def brevo_minimum(method: str, template: str, calls: list[Call]) -> int:
    """The fewest calls that could carry what `calls` carried to one Brevo endpoint.

    Batched endpoints are bounded by their documented limits; any other endpoint needs at
    least one call per distinct resource it touched (one attribute, one process, one list).
    """
    if (method, template) == ("POST", "/v3/events/batch"):
        return _events_batch_minimum(calls)
    if (method, template) == ("POST", "/v3/contacts/import"):
        return _import_minimum(calls)
    if template.endswith(("/contacts/add", "/contacts/remove")):
        return _list_change_minimum(calls)
    return len({c.path for c in calls})


def by_endpoint(calls: Iterable[Call]) -> dict[tuple[str, str], list[Call]]:
    """Group calls by (method, endpoint template)."""
    groups: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in calls:
        groups[(call.method, endpoint(call.path))].append(call)
    return dict(groups)


def brevo_table(calls: Iterable[Call], baseline: int) -> dict[str, Any]:
    """Brevo calls by endpoint with their minimum, the total ratio and the per-event baseline."""
    rows: list[dict[str, Any]] = []
    for (method, template), group in sorted(by_endpoint(calls).items(), key=lambda kv: kv[0][1]):
        rows.append(
            {
                "endpoint": f"{method} {template}",
                "calls": len(group),
                "minimum": brevo_minimum(method, template, group),
            }
        )
    table = _with_totals(rows)
    total = table["total"]
    return {
        **table,
        "one_call_per_event_baseline": baseline,
        "ratio_to_baseline": round(total / baseline, 5) if baseline else None,
        "rate_limit_floor_s": rate_limit_floor(rows),
        "baseline_rate_limit_floor_s": round(baseline / BREVO_REQUESTS_PER_SECOND, 1),
    }


def rate_limit_floor(rows: Iterable[Mapping[str, Any]]) -> float:
    """Seconds the calls need at least under Brevo's per-second limits, sent one at a time.

    Contacts and events calls each allow 10 a second; process polls have an hourly budget
    of 100 and cost no per-second time, so they are left out.
    """
    paced: int = sum(
        row["calls"]
        for row in rows
        if not row["endpoint"].split(" ")[1].startswith("/v3/processes")
    )
    return round(paced / BREVO_REQUESTS_PER_SECOND, 1)


def _pages(items: int, per_page: int, *, short_page_ends: bool) -> int:
    """Pages to list `items`.

    A reader may stop at a short page where the API allows it (suppressions, tags, lists);
    Mailgun's events end only on an empty page, so a full last page costs one more call.
    """
    if short_page_ends:
        return items // per_page + 1
    return math.ceil(items / per_page) + 1


# Mailgun listings by cursor: which stream's records each endpoint lists, and its page size.
_CURSOR_LISTINGS = {
    "/v3/{domain}/events": ("events", EVENTS_PER_PAGE),
    "/v3/{domain}/bounces": ("bounces", LIST_PAGE),
    "/v3/{domain}/complaints": ("complaints", LIST_PAGE),
    "/v3/{domain}/unsubscribes": ("unsubscribes", LIST_PAGE),
    "/v3/{domain}/tags": ("tags", LIST_PAGE),
    "/v3/lists/{address}/members/pages": ("list_members", MEMBERS_PAGE),
}


def _owner(path: str) -> str:
    """The domain or list a Mailgun path is about: /v3/<owner>/... or /v3/lists/<owner>/..."""
    parts = path.strip("/").split("/")
    return unquote(parts[2] if parts[1] == "lists" else parts[1])


def mailgun_minimum(
    method: str,
    template: str,
    calls: list[Call],
    records: Mapping[str, int],
    by_owner: Mapping[str, Mapping[str, int]],
) -> int:
    """The fewest Mailgun calls that list what the tap emitted from one endpoint.

    Cursor listings: full pages per domain or list (300 events, 100 members, 1000 others), ending
    on a short page, or for events on the empty page Mailgun's docs require. Domains: pages
    of 1000. Metrics: one call per distinct query (pagination aside). Anything else: one
    call per distinct path.
    """
    template = template.removesuffix("/{page}")
    if template in _CURSOR_LISTINGS:
        stream, per_page = _CURSOR_LISTINGS[template]
        owners = {_owner(c.path) for c in calls}
        counts = by_owner.get(stream, {})
        ends = stream != "events"
        return sum(_pages(counts.get(o, 0), per_page, short_page_ends=ends) for o in owners)
    if template == "/v3/lists/pages":
        return _pages(records.get("mailing_lists", 0), MEMBERS_PAGE, short_page_ends=True)
    if template == "/v4/domains":
        return max(1, math.ceil(records.get("domains", 0) / LIST_PAGE))
    if template == "/v1/analytics/logs":
        # One account-wide listing, 100 a page, ending on the page without `next`.
        return max(1, math.ceil(records.get("events", 0) / LOGS_PAGE))
    if template == "/v1/analytics/metrics":
        queries = set()
        for call in calls:
            body = _json(call.body) or {}
            body.pop("pagination", None)
            queries.add(json.dumps(body, sort_keys=True))
        return len(queries)
    return len({c.path for c in calls})


def mailgun_table(
    calls: Iterable[Call], records: Mapping[str, int], by_owner: Mapping[str, Mapping[str, int]]
) -> dict[str, Any]:
    """Mailgun calls by endpoint against the fewest that list the same records."""
    groups: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for (method, template), group in by_endpoint(calls).items():
        # The first events page and the pages after it are one listing.
        groups[(method, template.removesuffix("/{page}"))].extend(group)
    rows: list[dict[str, Any]] = [
        {
            "endpoint": f"{method} {template}",
            "calls": len(group),
            "minimum": mailgun_minimum(method, template, group, records, by_owner),
        }
        for (method, template), group in sorted(groups.items(), key=lambda kv: kv[0][1])
    ]
    return _with_totals(rows)


def _with_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Endpoint rows with their total calls, total minimum and the ratio of the two."""
    total = sum(r["calls"] for r in rows)
    minimum = sum(r["minimum"] for r in rows)
    return {
        "endpoints": rows,
        "total": total,
        "minimum": minimum,
        "ratio_to_minimum": round(total / minimum, 3) if minimum else None,
    }
