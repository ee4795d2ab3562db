"""A fake Mailgun API: the endpoints tap-mailgun reads, with the real API's paging quirks.

What it reproduces, because the tap has to cope with it:
- events: `paging.next` is an opaque URL (`/v3/{domain}/events/{token}`) that is ALWAYS present;
  the page after the last one is empty. The token carries the query's window and filters, and
  a cursor (timestamp, id) past the last event served, so an event stored late with an older
  timestamp is never seen by a traversal that already passed it (as in the real API).
- suppressions, tags, lists and list members: alphabetical, `page=next&address=...` (or `tag=`)
  cursors, `limit` capped at 1000 (400 above).
- /v4/domains: skip/limit, at most 1000 per page.
- POST /v1/analytics/metrics: counts computed from the stored events, offset pagination;
  dimensions time, domain, tag and subaccount; subaccounts' domains only with
  `include_subaccounts`.
- POST /v1/analytics/tags: the account's tags (each domain's, merged per account), skip/limit
  paging (at most 1000), `include_subaccounts` adds the subaccounts' tags.
- POST /v1/analytics/logs: the same stored events, account-wide, as the Logs API shows them
  (README.md, "The Logs API: what Mailgun documents", cites each source): `@timestamp`
  ISO-8601 truncated to the millisecond with `Z` (the Events API's float keeps microseconds),
  `user-variables` a JSON string, `domain.name`. `start`/`end` are RFC 2822 (whole seconds),
  by default the last day up to now; `events` and `domain` filters; a subaccount's domains
  only with `include_subaccounts`; `limit` at most 100. Where Mailgun documents nothing the
  fake chooses the strict or plain answer: `[start, end)` (`logs_bounds` serves any of
  `[)`, `(]`, `()`, `[]`, for the tap's tests), 400 on a `limit` of 0 or over 100, default
  `limit` 10 and `sort` timestamp:desc, equal timestamps ordered by id.
  `pagination.token` is a cursor (timestamp, id) past the last event served, sent back with
  the same query (another query's token is refused), so an event stored late behind the
  cursor is not seen, as with the Events API. `pagination` holds `next` while more events
  follow and nothing else: the last page (or the only one) answers `pagination: {}`, as
  Mailgun's answer recorded in mailgun-ruby does; the spec's `previous`, `first`, `last` and
  `total` are not served (the tap follows `next` only).
- webhooks: GET /v3/domains/{domain}/webhooks lists a domain's URLs per event type; POST
  /v4/domains/{domain}/webhooks adds one URL to several event types at once, leaving their
  other URLs alone; it refuses (400, nothing changed) a URL an event type already has and a
  fourth URL for an event type (Mailgun's limit: 3).
- GET /v4/domains/{name}: the domain with its sending (SPF, DKIM, tracking CNAME) and
  receiving (MX) DNS records, each `valid`, `invalid` or `unknown` as set by `set_dns`.
- GET /v4/address/validate: the verdict a test chose with `set_verdict`, else deliverable;
  every call is one billed validation, counted in `validations`.
- basic auth `api:<key>`; any other key gets 401 "Forbidden". Unknown domains get 404 with
  a JSON message; a path Mailgun has no API at gets its plain-text "404 page not found".
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from fakes.server import FakeAPI, json_response
from fakes.specs import MAILGUN_SPEC

SUPPRESSION_KINDS = ("bounces", "complaints", "unsubscribes")
DNS_CHECKS = ("spf", "dkim", "mx", "tracking_cname")
# Local parts Mailgun flags as role addresses (a sample of its list).
ROLE_LOCAL_PARTS = frozenset({"admin", "info", "postmaster", "sales", "support", "noreply"})
MAX_EVENTS_LIMIT = 300
MAX_LOGS_LIMIT = 100  # "The maximum number of items returned (100 max)" (LogsRequest)
LOGS_SORTS = ("timestamp:asc", "timestamp:desc")
MAX_LIST_LIMIT = 1000
MAX_TAGS_LIMIT = 1000  # "Default 10 max 1000" (the spec's tags Pagination.limit)
ACCOUNT_ID = "acct-main"
_V3_TAG_FIELDS = frozenset(
    {"tag", "description", "first-seen", "last-seen"}
)  # the account the API key belongs to (a subaccount's parent)
# "Maximum of 3 urls for a given webhook type" (the spec's POST /v3/domains/{domain}/webhooks).
MAX_WEBHOOK_URLS = 3
WEBHOOK_EVENT_TYPES = (
    "accepted",
    "clicked",
    "opened",
    "unsubscribed",
    "delivered",
    "permanent_fail",
    "temporary_fail",
    "complained",
)

# Which metric counter each event feeds; failed events also feed the severity-specific counter.
_EVENT_COUNTERS = {
    "accepted": "accepted_count",
    "delivered": "delivered_count",
    "failed": "failed_count",
    "opened": "opened_count",
    "clicked": "clicked_count",
    "unsubscribed": "unsubscribed_count",
    "complained": "complained_count",
    "stored": "stored_count",
}
# "Mailgun's Metrics API ... supports up to 10 counts and rates, as well as 3 dimensions"
# (documentation.mailgun.com, user manual, Reporting > Metric Definitions): more is refused.
MAX_METRICS_PER_QUERY = 10
MAX_DIMENSIONS_PER_QUERY = 3
# Rates are ratios (0 to 1) as strings with four decimals, as in the official OpenAPI
# example of POST /v1/analytics/metrics (clicked_rate "0.8300"): of delivered (engagement)
# or of accepted (delivery).
_RATES = {
    "delivered_rate": ("delivered_count", "accepted_count"),
    "opened_rate": ("opened_count", "delivered_count"),
    "clicked_rate": ("clicked_count", "delivered_count"),
    "unsubscribed_rate": ("unsubscribed_count", "delivered_count"),
    "complained_rate": ("complained_count", "delivered_count"),
    "fail_rate": ("failed_count", "accepted_count"),
    "permanent_fail_rate": ("permanent_failed_count", "accepted_count"),
    "temporary_fail_rate": ("temporary_failed_count", "accepted_count"),
    "bounce_rate": ("bounced_count", "accepted_count"),
    "unique_opened_rate": ("unique_opened_count", "delivered_count"),
    "unique_clicked_rate": ("unique_clicked_count", "delivered_count"),
}
# Mailgun declining to send to a suppressed address: counted apart from bounces.
_SUPPRESSED_COUNTERS = {
    "suppress-bounce": "suppressed_bounces_count",
    "suppress-unsubscribe": "suppressed_unsubscribed_count",
    "suppress-complaint": "suppressed_complaints_count",
}
# Failed events by severity: permanent ones are hard bounces, temporary ones soft bounces.
_SEVERITY_COUNTERS = {
    "permanent": ("permanent_failed_count", "hard_bounces_count", "bounced_count"),
    "temporary": ("temporary_failed_count", "soft_bounces_count"),
}


def _encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return None
    return decoded


def parse_time(value: str) -> float:
    """Mailgun accepts epoch seconds or RFC 2822 dates wherever it takes a time."""
    try:
        return float(value)
    except ValueError:
        return parsedate_to_datetime(value).timestamp()


def event_key(event: dict[str, Any]) -> tuple[float, str]:
    """Where an event stands in the fake's order (and in a page cursor): timestamp, then id."""
    return float(event["timestamp"]), str(event["id"])


def query_window(query: dict[str, Any]) -> tuple[float, float]:
    """An events query's [begin, end) in epoch seconds, unbounded where it gives none."""
    begin = parse_time(query["begin"]) if query.get("begin") else -math.inf
    end = parse_time(query["end"]) if query.get("end") else math.inf
    return begin, end


def query_kinds(query: dict[str, Any]) -> set[str] | None:
    """The event types an events query asks for (`event=a OR b`), None for all."""
    event = query.get("event")
    return {k.strip() for k in event.split(" OR ")} if event else None


def epoch_millis(epoch: float) -> int:
    """The millisecond an epoch-seconds float falls in (via whole microseconds: the float
    1.123 is 1.12299999..., still millisecond 1123)."""
    return round(epoch * 1_000_000) // 1000


def logs_timestamp(epoch: float) -> str:
    """An event's `@timestamp` as the Logs API shows it: ISO-8601 UTC, milliseconds, `Z`.
    Truncated, not rounded: 12:00:00.123999 is 12:00:00.123 (the millisecond it falls in)."""
    millis = epoch_millis(epoch)
    moment = datetime.fromtimestamp(millis // 1000, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


def log_event(event: dict[str, Any], domain: str) -> dict[str, Any]:
    """A stored (Events API) event as the Logs API lists it."""
    item = {k: v for k, v in event.items() if k != "timestamp"}
    item["@timestamp"] = logs_timestamp(float(event["timestamp"]))
    item["domain"] = {"name": domain}
    if "user-variables" in event:
        item["user-variables"] = json.dumps(event["user-variables"])
    return item


def logs_query(body: dict[str, Any]) -> dict[str, Any]:
    """What a Logs API request asks for, checked as Mailgun does (ValueError: a 400)."""
    paging = body.get("pagination") or {}
    limit = paging.get("limit", 10)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LOGS_LIMIT:
        raise ValueError(f"pagination.limit must be between 1 and {MAX_LOGS_LIMIT}")
    sort = paging.get("sort") or "timestamp:desc"
    if sort not in LOGS_SORTS:
        raise ValueError(f"invalid sort {sort!r}")
    # "start: (default: 1 day before current time)", "end: (default: current time)" (the spec)
    now = datetime.now(timezone.utc).timestamp()
    try:
        start = parsedate_to_datetime(body["start"]).timestamp() if body.get("start") else None
        end = parsedate_to_datetime(body["end"]).timestamp() if body.get("end") else now
    except (TypeError, ValueError):
        raise ValueError("start and end must be RFC 2822 dates") from None
    start = now - 86400 if start is None else start
    if start > end:
        raise ValueError("start must be before end")
    domains: list[str] = []
    not_domains: list[str] = []
    for clause in (body.get("filter") or {}).get("AND", []):
        if clause.get("attribute") != "domain" or clause.get("comparator") not in ("=", "!="):
            raise ValueError(f"fake: unsupported filter {clause}")
        values = [v["value"] for v in clause["values"]]
        (domains if clause["comparator"] == "=" else not_domains).extend(values)
    return {
        "start": start,
        "end": end,
        "events": sorted(body.get("events") or []),
        "domains": sorted(domains),
        "not_domains": sorted(not_domains),
        "include_subaccounts": bool(body.get("include_subaccounts")),
        "sort": sort,
        "limit": limit,
    }


def _token_query(query: dict[str, Any]) -> dict[str, Any]:
    """What a pagination token must be sent back with: the same query (any page size)."""
    return {k: v for k, v in query.items() if k != "limit"}


def logs_event_wanted(query: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether an event falls in a logs query's [start, end) (by its millisecond, the precision
    the Logs API keeps) and is of the types asked for."""
    stamp = epoch_millis(float(event["timestamp"])) / 1000
    kinds = query["events"]
    bounds = query.get("bounds", "[)")
    after_start = query["start"] <= stamp if bounds[0] == "[" else query["start"] < stamp
    before_end = stamp <= query["end"] if bounds[1] == "]" else stamp < query["end"]
    return after_start and before_end and (not kinds or event["event"] in kinds)


def _rfc2822(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, tz=timezone.utc))


def _bucket_start(epoch: float, resolution: str) -> datetime:
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    if resolution == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if resolution == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@functools.cache
def _bucket_label(hour: int, resolution: str) -> str:
    """The bucket label of every moment in one UTC hour (hour, day and month buckets all start
    on a whole hour), cached: the metrics endpoint re-buckets every stored event per query."""
    return _bucket_start(hour * 3600.0, resolution).strftime("%Y-%m-%dT%H:%M:%S")


class FakeMailgun(FakeAPI):
    """A Mailgun account in memory, served over real HTTP on loopback."""

    spec_name = MAILGUN_SPEC

    def __init__(
        self,
        *,
        api_key: str = "key-test",
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.domains: dict[str, dict[str, Any]] = {}
        self.subaccounts: dict[str, str] = {}  # domain -> the subaccount it belongs to
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.suppressions: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        self.tags: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.lists: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.webhooks: dict[str, dict[str, list[str]]] = defaultdict(dict)
        self.dns: dict[str, dict[str, str]] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.validations: dict[str, int] = defaultdict(int)  # billed calls per address
        # Whether the Logs API's `start` and `end` include their second: not documented.
        self.logs_bounds = "[)"
        super().__init__(validate=validate, host=host, port=port, latency=latency)

    # --- loading API (the contract others build on) -------------------------------------
    def add_domain(
        self,
        name: str,
        *,
        state: str = "active",
        subaccount: str | None = None,
        created: datetime | None = None,
    ) -> None:
        """Register a sending domain; `state` is active, unverified or disabled; a domain of
        `subaccount` is seen by the account's analytics only with include_subaccounts;
        `created` (UTC) is its listing's created_at, by default long ago."""
        with self.lock:
            if subaccount:
                self.subaccounts[name] = subaccount
            self.domains[name] = {
                "created_at": format_datetime(
                    created or datetime(2024, 1, 1, tzinfo=timezone.utc), usegmt=True
                ),
                "id": f"id-{len(self.domains) + 1:06d}",
                "is_disabled": state == "disabled",
                "name": name,
                "require_tls": False,
                "skip_verification": False,
                "smtp_login": f"postmaster@{name}",
                "spam_action": "disabled",
                "state": state,
                "type": "custom",
                "use_automatic_sender_security": True,
                "web_prefix": "email",
                "web_scheme": "https",
                "wildcard": False,
                "encrypt_incoming_message": False,
                "message_ttl": 259200,
            }
            self.dns[name] = dict.fromkeys(DNS_CHECKS, "valid")

    def set_dns(self, domain: str, **states: str) -> None:
        """Set what Mailgun's DNS check found: spf, dkim, mx, tracking_cname each `valid`,
        `invalid` or `unknown` (a domain starts all valid)."""
        unknown = set(states) - set(DNS_CHECKS)
        if unknown:
            raise ValueError(f"DNS checks are {DNS_CHECKS}, not {sorted(unknown)}")
        with self.lock:
            self._require_domain(domain)
            self.dns[domain].update(states)

    def set_verdict(self, address: str, result: str, risk: str = "high", **extra: Any) -> None:
        """What /v4/address/validate answers for `address` (result deliverable, undeliverable,
        do_not_send, catch_all or unknown; risk low, medium, high or unknown); `extra` adds or
        overrides fields (reason, did_you_mean, is_disposable_address, is_role_address)."""
        with self.lock:
            self.verdicts[address.lower()] = {"result": result, "risk": risk, **extra}

    def add_events(self, domain: str, events: Iterable[dict[str, Any]]) -> None:
        """Store raw Mailgun events (dashed keys, float `timestamp`) for a known domain."""
        with self.lock:
            self._require_domain(domain)
            self.events[domain].extend(events)
            self.events[domain].sort(key=event_key)

    def add_suppression(self, domain: str, kind: str, item: dict[str, Any]) -> None:
        """Store a bounce, complaint or unsubscribe as the API lists it (RFC 2822 created_at)."""
        if kind not in SUPPRESSION_KINDS:
            raise ValueError(f"kind must be one of {SUPPRESSION_KINDS}, not {kind!r}")
        with self.lock:
            self._require_domain(domain)
            self.suppressions[(domain, kind)][item["address"]] = dict(item)

    def add_tag(self, domain: str, tag: str, description: str = "") -> None:
        """Store a tag of a domain."""
        with self.lock:
            self._require_domain(domain)
            self.tags[domain][tag] = {
                "tag": tag,
                "description": description,
                "first-seen": "2024-01-01T00:00:00Z",
                "last-seen": "2024-01-02T00:00:00Z",
            }

    def add_list(self, address: str, *, name: str = "", description: str = "") -> None:
        """Create a mailing list."""
        with self.lock:
            self.lists[address] = {
                "address": address,
                "name": name,
                "description": description,
                "access_level": "readonly",
                "reply_preference": "list",
                "created_at": "Mon, 01 Jan 2024 00:00:00 -0000",
                "members_count": 0,
            }

    def add_member(self, list_address: str, member: dict[str, Any]) -> None:
        """Add a member (address, name, vars, subscribed) to an existing list."""
        with self.lock:
            if list_address not in self.lists:
                raise KeyError(f"unknown list {list_address}; add_list it first")
            stored = {"name": "", "vars": {}, "subscribed": True, **member}
            self.members[list_address][member["address"]] = stored
            self.lists[list_address]["members_count"] = len(self.members[list_address])

    def add_webhook(self, domain: str, event_type: str, *urls: str) -> None:
        """Register webhook URLs of one event type on a domain, as the control panel does."""
        with self.lock:
            self._require_domain(domain)
            self.webhooks[domain].setdefault(event_type, []).extend(urls)

    def _require_domain(self, domain: str) -> None:
        if domain not in self.domains:
            raise KeyError(f"unknown domain {domain}; add_domain it first")

    # --- HTTP ---------------------------------------------------------------------------
    def rules(self) -> Iterable[Rule]:
        """Routes of the endpoints the tap reads."""
        return [
            Rule("/v4/domains", endpoint="list_domains", methods=["GET"]),
            Rule("/v4/domains/<name>", endpoint="domain_details", methods=["GET"]),
            Rule("/v4/address/validate", endpoint="validate_address", methods=["GET"]),
            Rule("/v3/lists/pages", endpoint="list_lists", methods=["GET"]),
            Rule("/v3/lists/<list_address>/members/pages", endpoint="list_members"),
            Rule("/v3/<domain>/events", endpoint="list_events", methods=["GET"]),
            Rule("/v3/<domain>/events/<token>", endpoint="events_page", methods=["GET"]),
            Rule("/v3/<domain>/tags", endpoint="list_tags", methods=["GET"]),
            Rule("/v3/<domain>/<any(bounces,complaints,unsubscribes):kind>", endpoint="list_supp"),
            Rule("/v1/analytics/metrics", endpoint="metrics", methods=["POST"]),
            Rule("/v1/analytics/tags", endpoint="account_tags", methods=["POST"]),
            Rule("/v1/analytics/logs", endpoint="logs", methods=["POST"]),
            Rule("/v3/domains/<domain>/webhooks", endpoint="list_webhooks", methods=["GET"]),
            Rule("/v4/domains/<domain>/webhooks", endpoint="create_webhooks", methods=["POST"]),
        ]

    def authenticate(self, request: Request) -> Response | None:
        """Mailgun's basic auth: user `api`, password the key; anything else is 401 Forbidden."""
        auth = request.authorization
        if auth is None or auth.username != "api" or auth.password != self.api_key:
            return Response("Forbidden", status=401, content_type="text/plain")
        return None

    def no_such_path(self) -> Response:
        """Mailgun's router answers an unknown path in plain text, before checking the key."""
        return Response("404 page not found\n", status=404, content_type="text/plain")

    def list_domains(self, request: Request) -> Response:
        """GET /v4/domains: skip/limit paging, optional state filter."""
        limit = request.args.get("limit", 100, type=int)
        skip = request.args.get("skip", 0, type=int)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return json_response({"message": "limit must be between 1 and 1000"}, 400)
        state = request.args.get("state")
        items = [d for d in self.domains.values() if state is None or d["state"] == state]
        return json_response({"total_count": len(items), "items": items[skip : skip + limit]})

    def domain_details(self, request: Request, name: str) -> Response:
        """GET /v4/domains/{name}: the domain and the DNS records Mailgun checks for it."""
        missing = self._unknown_domain(name)
        if missing is not None:
            return missing
        state = self.dns[name]

        def record(check: str, record_type: str, value: str, **extra: str) -> dict[str, Any]:
            valid = state[check]
            return {
                "is_active": True,
                "cached": [value] if valid == "valid" else [],
                "record_type": record_type,
                "valid": valid,
                "value": value,
                **extra,
            }

        sending = [
            record("spf", "TXT", "v=spf1 include:mailgun.org ~all", name=name),
            record(
                "dkim",
                "TXT",
                "k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ",
                name=f"pdk1._domainkey.{name}",
            ),
            record("tracking_cname", "CNAME", "mailgun.org", name=f"email.{name}"),
        ]
        receiving = [
            record("mx", "MX", f"mx{host}.mailgun.org", priority="10") for host in ("a", "b")
        ]
        body = {
            "domain": self.domains[name],
            "sending_dns_records": sending,
            "receiving_dns_records": receiving,
        }
        return json_response(body)

    def validate_address(self, request: Request) -> Response:
        """GET /v4/address/validate: one billed validation of `address`."""
        address = request.args.get("address", "")
        local, _, domain = address.partition("@")
        if not local or not domain:
            return json_response({"message": "invalid address"}, 400)
        self.validations[address.lower()] += 1
        verdict: dict[str, Any] = {
            "address": address,
            "did_you_mean": None,
            "is_disposable_address": False,
            "is_role_address": local.lower() in ROLE_LOCAL_PARTS,
            "reason": [],
            "result": "deliverable",
            "risk": "low",
            **self.verdicts.get(address.lower(), {}),
        }
        if verdict["did_you_mean"] is None:
            del verdict["did_you_mean"]  # Mailgun omits it when it has no suggestion
        return json_response(verdict)

    def _unknown_domain(self, domain: str) -> Response | None:
        if domain in self.domains:
            return None
        return json_response({"message": f"Domain not found: {domain}"}, 404)

    # webhooks -------------------------------------------------------------------------------
    def _webhooks_of(self, domain: str) -> dict[str, Any]:
        hooks = self.webhooks[domain]
        return {"webhooks": {kind: {"urls": list(urls)} for kind, urls in hooks.items()}}

    def list_webhooks(self, request: Request, domain: str) -> Response:
        """GET /v3/domains/{domain}/webhooks: every event type's URLs."""
        if domain not in self.domains:
            return json_response({"message": "Domain not found"}, 404)
        return json_response(self._webhooks_of(domain))

    def create_webhooks(self, request: Request, domain: str) -> Response:
        """POST /v4/domains/{domain}/webhooks: add `url` to each of `event_types`, all or none."""
        if domain not in self.domains:
            return json_response({"message": "Domain not found"}, 404)
        url = request.form.get("url", "")
        kinds = request.form.getlist("event_types")
        if not url.startswith(("https://", "http://")):
            return json_response({"Reason": f"invalid parameters: {url} is not a valid url"}, 400)
        unknown = [k for k in kinds if k not in WEBHOOK_EVENT_TYPES]
        if not kinds or unknown:
            return json_response({"Reason": f"invalid event types: {unknown or kinds}"}, 400)
        hooks = self.webhooks[domain]
        for kind in kinds:
            urls = hooks.get(kind, [])
            if url in urls:
                reason = f"Webhook for event type '{kind}' with URL '{url}' already exists"
                return json_response({"Reason": reason}, 400)
            if len(urls) >= MAX_WEBHOOK_URLS:
                reason = f"Webhook for event type '{kind}' has reached the limit of 3 URLs"
                return json_response({"Reason": reason}, 400)
        for kind in kinds:
            hooks.setdefault(kind, []).append(url)
        return json_response(self._webhooks_of(domain))

    # events ---------------------------------------------------------------------------------
    def list_events(self, request: Request, domain: str) -> Response:
        """GET /v3/{domain}/events: the first page of a query."""
        limit = request.args.get("limit", 100, type=int)
        if not 1 <= limit <= MAX_EVENTS_LIMIT:  # refused even when the spec is not checked
            return json_response({"message": "Limit must be between 1 and 300"}, 400)
        query = {
            "begin": request.args.get("begin"),
            "end": request.args.get("end"),
            "ascending": request.args.get("ascending", "no"),
            "limit": limit,
            "event": request.args.get("event"),
        }
        return self._events_page(request, domain, query, after=None)

    def events_page(self, request: Request, domain: str, token: str) -> Response:
        """GET /v3/{domain}/events/{token}: a page after (or before) a cursor of a query."""
        decoded = _decode_token(token)
        if decoded is None:
            return json_response({"message": "Invalid page token"}, 400)
        return self._events_page(request, domain, decoded["q"], after=decoded.get("after"))

    def _events_page(
        self, request: Request, domain: str, query: dict[str, Any], after: list[Any] | None
    ) -> Response:
        missing = self._unknown_domain(domain)
        if missing is not None:
            return missing
        page = self.select_events(domain, query, after)
        # An empty page keeps the cursor it was asked with, so its next link repeats.
        last = [page[-1]["timestamp"], page[-1]["id"]] if page else after
        base = f"{request.host_url.rstrip('/')}/v3/{domain}/events/"
        first = _encode_token({"q": query, "after": None})
        paging = {
            "next": base + _encode_token({"q": query, "after": last}),
            "previous": base + first,
            "first": base + first,
            "last": base + first,
        }
        return json_response({"items": page, "paging": paging})

    def select_events(
        self, domain: str, query: dict[str, Any], after: list[Any] | None
    ) -> list[dict[str, Any]]:
        """One page of an events query: events in its window and of its types, past the cursor
        `after` ([timestamp, id]) in the query's order, at most `limit` of them.

        Scans every event of the domain: plain enough to read as the reference. A subclass may
        find the same page faster (bench/fakes.py), never a different one.
        """
        begin, end = query_window(query)
        kinds = query_kinds(query)
        selected = [
            e
            for e in self.events[domain]
            if begin <= float(e["timestamp"]) < end and (kinds is None or e["event"] in kinds)
        ]
        ascending = query["ascending"] == "yes"
        if not ascending:
            selected.reverse()
        if after is not None:
            cursor = (float(after[0]), str(after[1]))
            if ascending:
                selected = [e for e in selected if event_key(e) > cursor]
            else:
                selected = [e for e in selected if event_key(e) < cursor]
        return selected[: int(query["limit"])]

    # logs -------------------------------------------------------------------------------------
    def logs(self, request: Request) -> Response:
        """POST /v1/analytics/logs: one page of the account's events, after the token's cursor."""
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return json_response({"message": "the body must be a JSON object"}, 400)
        try:
            query = logs_query(body)
        except ValueError as exc:
            return json_response({"message": str(exc)}, 400)
        query["bounds"] = self.logs_bounds
        paging = body.get("pagination") or {}
        after = None
        if paging.get("token"):
            decoded = _decode_token(str(paging["token"]))
            # A window left to its defaults (the last day) was fixed by the first page.
            defaulted = [k for k in ("start", "end") if not body.get(k)]
            if decoded is not None:
                query.update({k: decoded["q"].get(k) for k in defaulted})
            if decoded is None or decoded.get("q") != _token_query(query):
                return json_response({"message": "Invalid pagination token"}, 400)
            after = decoded["after"]
        page, more = self.select_logs(query, after)
        pagination: dict[str, Any] = {}
        if more:
            last = [page[-1][0], page[-1][1]["id"]]
            pagination["next"] = _encode_token({"q": _token_query(query), "after": last})
        return json_response(
            {
                "start": _rfc2822(query["start"]),
                "end": _rfc2822(query["end"]),
                "items": [log_event(event, domain) for _, event, domain in page],
                "pagination": pagination,
                "aggregates": {},
            }
        )

    def select_logs(
        self, query: dict[str, Any], after: list[Any] | None
    ) -> tuple[list[tuple[float, dict[str, Any], str]], bool]:
        """One page of a logs query: (timestamp, event, domain) past the cursor `after`
        ([timestamp, id]) in the query's order, and whether more follow.

        Scans every stored event: plain enough to read as the reference. A subclass may find
        the same page faster (bench/fakes.py), never a different one.
        """
        matching = [
            (float(e["timestamp"]), e, domain)
            for domain in self.domains
            if self.logs_domain_wanted(query, domain)
            for e in self.events[domain]
            if logs_event_wanted(query, e)
        ]
        matching.sort(key=lambda m: event_key(m[1]))
        ascending = query["sort"] == "timestamp:asc"
        if not ascending:
            matching.reverse()
        if after is not None:
            cursor = (float(after[0]), str(after[1]))
            if ascending:
                matching = [m for m in matching if event_key(m[1]) > cursor]
            else:
                matching = [m for m in matching if event_key(m[1]) < cursor]
        limit = int(query["limit"])
        return matching[:limit], len(matching) > limit

    def logs_domain_wanted(self, query: dict[str, Any], domain: str) -> bool:
        """Whether a logs query covers `domain`: its `domain` filter, and subaccounts."""
        if domain in self.subaccounts and not query["include_subaccounts"]:
            return False
        wanted, unwanted = query["domains"], query["not_domains"]
        return (not wanted or domain in wanted) and domain not in unwanted

    # alphabetical cursor listings -----------------------------------------------------------
    def _cursor_page(
        self,
        request: Request,
        items: dict[str, dict[str, Any]],
        cursor_param: str,
    ) -> Response:
        """Alphabetical listing with `page=next&<cursor_param>=<last key>` cursors."""
        limit = request.args.get("limit", 100, type=int)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return json_response({"message": "Limit must be between 1 and 1000"}, 400)
        keys = sorted(items)
        page_kind = request.args.get("page", "first") or "first"
        pivot = request.args.get(cursor_param, "")
        if page_kind == "next" and pivot:
            keys = [k for k in keys if k > pivot]
        elif page_kind == "previous" and pivot:
            keys = [k for k in keys if k < pivot][-limit:]
        elif page_kind == "last":
            keys = keys[-limit:]
        page_keys = keys[:limit]
        base = request.base_url

        def link(kind: str, key: str = "") -> str:
            params = {"page": kind, cursor_param: key, "limit": limit}
            return f"{base}?{urlencode(params)}"

        return json_response(
            {
                "items": [items[k] for k in page_keys],
                "paging": {
                    "first": link("first"),
                    "last": link("last"),
                    "next": link("next", page_keys[-1] if page_keys else pivot),
                    "previous": link("previous", page_keys[0] if page_keys else pivot),
                },
            }
        )

    def list_supp(self, request: Request, domain: str, kind: str) -> Response:
        """GET /v3/{domain}/bounces|complaints|unsubscribes."""
        missing = self._unknown_domain(domain)
        if missing is not None:
            return missing
        return self._cursor_page(request, self.suppressions[(domain, kind)], "address")

    def list_tags(self, request: Request, domain: str) -> Response:
        """GET /v3/{domain}/tags."""
        missing = self._unknown_domain(domain)
        if missing is not None:
            return missing
        return self._cursor_page(request, self.tags[domain], "tag")

    def list_lists(self, request: Request) -> Response:
        """GET /v3/lists/pages."""
        return self._cursor_page(request, self.lists, "address")

    def list_members(self, request: Request, list_address: str) -> Response:
        """GET /v3/lists/{address}/members/pages."""
        if list_address not in self.lists:
            return json_response({"message": "Mailing list not found"}, 404)
        return self._cursor_page(request, self.members[list_address], "address")

    def account_of(self, domain: str) -> str:
        """The account a domain sends for: its subaccount, or the main account."""
        return self.subaccounts.get(domain, ACCOUNT_ID)

    def account_tags(self, request: Request) -> Response:
        """POST /v1/analytics/tags: every tag of the account (and of its subaccounts when
        asked), one item per account and tag, by tag; skip/limit paging."""
        body = request.get_json(force=True)
        paging = body.get("pagination") or {}
        skip, limit = int(paging.get("skip", 0)), int(paging.get("limit", 10))
        if not 1 <= limit <= MAX_TAGS_LIMIT:
            return json_response({"message": "limit must be between 1 and 1000"}, 400)
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for domain, tags in self.tags.items():
            account = self.account_of(domain)
            if account != ACCOUNT_ID and not body.get("include_subaccounts"):
                continue
            for name, tag in tags.items():
                item = merged.setdefault(
                    (account, name),
                    {
                        "account_id": account,
                        "parent_account_id": ACCOUNT_ID,
                        "account_name": account,
                        "tag": name,
                        "description": tag["description"],
                        "first_seen": tag["first-seen"],
                        "last_seen": tag["last-seen"],
                        # fields a test adds, as Mailgun may add some one day
                        **{k: v for k, v in tag.items() if k not in _V3_TAG_FIELDS},
                    },
                )
                item["first_seen"] = min(item["first_seen"], tag["first-seen"])
                item["last_seen"] = max(item["last_seen"], tag["last-seen"])
        items = [merged[k] for k in sorted(merged, key=lambda k: (k[1], k[0]))]
        pagination = {"sort": paging.get("sort", "tag:asc"), "skip": skip, "limit": limit}
        if paging.get("include_total"):
            pagination["total"] = len(items)
        return json_response({"items": items[skip : skip + limit], "pagination": pagination})

    # metrics ----------------------------------------------------------------------------
    def metrics(self, request: Request) -> Response:
        """POST /v1/analytics/metrics: counts and rates per requested dimensions."""
        body = request.get_json(force=True)
        resolution = body.get("resolution", "day")
        if resolution not in ("hour", "day", "month"):
            return json_response({"message": f"invalid resolution {resolution}"}, 400)
        dims: list[str] = body.get("dimensions", [])
        wanted: list[str] = body.get("metrics", [])
        if len(wanted) > MAX_METRICS_PER_QUERY or len(dims) > MAX_DIMENSIONS_PER_QUERY:
            return json_response(
                {
                    "message": f"at most {MAX_METRICS_PER_QUERY} metrics and "
                    f"{MAX_DIMENSIONS_PER_QUERY} dimensions per query"
                },
                400,
            )
        unsupported = set(dims) - {"time", "domain", "tag", "subaccount"}
        if unsupported:
            return json_response({"message": f"fake: dimensions {unsupported} unsupported"}, 400)
        start = parse_time(body["start"]) if body.get("start") else -math.inf
        end = parse_time(body["end"]) if body.get("end") else math.inf
        wanted_domains = self._filter_values(body.get("filter"), "domain")
        buckets: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for domain, events in self.events.items():
            if wanted_domains is not None and domain not in wanted_domains:
                continue
            if self.account_of(domain) != ACCOUNT_ID and not body.get("include_subaccounts"):
                continue
            for event in events:
                stamp = float(event["timestamp"])
                if not start <= stamp < end:
                    continue
                for key in self._bucket_keys(event, domain, dims, resolution, self.account_of):
                    self._count(buckets[key], event)
        rows = [
            self._metrics_row(key, dims, counts, body) for key, counts in sorted(buckets.items())
        ]
        paging = body.get("pagination") or {}
        skip, limit = int(paging.get("skip", 0)), int(paging.get("limit", 1500))
        return json_response(
            {
                "start": _rfc2822(start) if start != -math.inf else None,
                "end": _rfc2822(end) if end != math.inf else None,
                "resolution": resolution,
                "dimensions": dims,
                "pagination": {
                    "sort": paging.get("sort", ""),
                    "skip": skip,
                    "limit": limit,
                    "total": len(rows),
                },
                "items": rows[skip : skip + limit],
            }
        )

    @staticmethod
    def _filter_values(filter_: dict[str, Any] | None, attribute: str) -> set[str] | None:
        if not filter_:
            return None
        values: set[str] = set()
        for clause in filter_.get("AND", []):
            if clause.get("attribute") == attribute and clause.get("comparator") == "=":
                values.update(v["value"] for v in clause.get("values", []))
        return values or None

    @staticmethod
    def _bucket_keys(
        event: dict[str, Any],
        domain: str,
        dims: list[str],
        resolution: str,
        account_of: Callable[[str], str],
    ) -> list[tuple[str, ...]]:
        """One key per combination of dimension values the event belongs to (tags fan out)."""
        keys: list[tuple[str, ...]] = [()]
        for dim in dims:
            if dim == "time":
                values = [_bucket_label(int(float(event["timestamp"]) // 3600), resolution)]
            elif dim == "domain":
                values = [domain]
            elif dim == "subaccount":
                values = [account_of(domain)]
            else:
                values = list(event.get("tags") or [])
            keys = [(*k, v) for k in keys for v in values]
        return keys

    @staticmethod
    def _count(counts: dict[str, int], event: dict[str, Any]) -> None:
        counter = _EVENT_COUNTERS.get(event["event"])
        if counter:
            counts[counter] += 1
        if event["event"] != "failed":
            return
        suppressed = _SUPPRESSED_COUNTERS.get(event.get("reason", ""))
        if suppressed is not None:
            # "Permanent failures fall into three categories, soft bounces, hard bounces, and
            # suppressions" (the spec, bounced_count): a suppressed send is no hard bounce.
            counts["permanent_failed_count"] += 1
            counts[suppressed] += 1
            return
        for name in _SEVERITY_COUNTERS.get(event.get("severity", "permanent"), ()):
            counts[name] += 1

    @staticmethod
    def _metrics_row(
        key: tuple[str, ...], dims: list[str], counts: dict[str, int], body: dict[str, Any]
    ) -> dict[str, Any]:
        dimensions = []
        for dim, value in zip(dims, key, strict=True):
            if dim == "time":
                moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
                value = format_datetime(moment)
            dimensions.append({"dimension": dim, "value": value, "display_value": value})
        metrics: dict[str, Any] = {}
        for name in body.get("metrics", []):
            if name in _RATES:
                num, den = (counts.get(n, 0) for n in _RATES[name])
                metrics[name] = f"{num / den:.4f}" if den else "0.0000"
            elif name.endswith("_rate"):
                metrics[name] = "0.0000"  # a rate the fake does not compute; still a string
            else:
                metrics[name] = counts.get(name, 0)
        return {"dimensions": dimensions, "metrics": metrics}


def days_ago(days: float) -> datetime:
    """A UTC moment `days` ago, handy for created_at values."""
    return datetime.now(timezone.utc) - timedelta(days=days)
