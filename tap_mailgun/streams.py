"""The Mailgun streams: what each endpoint is, and only what differs between them.

Paging, auth, regions, retries, errors and the run report live in client.py; record shapes
in records.py. `build_streams` makes one run's streams, sharing its report and its domains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import cached_property
from http import HTTPStatus
from importlib import resources
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import quote, unquote, urlsplit

import msgspec
import requests
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from typing_extensions import override

from tap_mailgun.client import (
    MailgunGoneError,
    MailgunRunError,
    MailgunStream,
    RunReport,
    ShortPagePaginator,
    TotalPaginator,
    domain_of,
    server_time,
)
from tap_mailgun.prefetch import STOP_WAIT_SECONDS, OrderedPrefetch
from tap_mailgun.records import dns_states, event_record, rfc2822_to_iso, snake_keys
from tap_mailgun.sdk_compat import (
    prime_starting_values,
    progress_markers,
    send_with_retries,
)

if TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context, Record

EVENTS_PAGE_LIMIT = 300  # the API's maximum
DEFAULT_EVENT_LAG_MINUTES = 30
# Without start_date, reach back over Mailgun's longest event retention (paid plans).
EVENT_RETENTION_DAYS = 30
DEFAULT_METRICS_LOOKBACK_DAYS = 3
# A bookmark keeps microseconds; an event's float may carry more digits and round up. Starting
# a microsecond earlier re-reads boundary events (the target dedups) but never skips one.
BOOKMARK_MARGIN = timedelta(microseconds=1)

# Mailgun's servers and the clock that stamps created_at may differ by a little: a bookmark
# this much before the listing's start still covers everything created during the listing.
LISTING_CLOCK_MARGIN = timedelta(seconds=30)

# Domains read at a time (`concurrent_domains`). bench/README.md, "Domains": at 250 ms a
# request and 1,000 domains, a run took 103 s at 32 and 135 s at 16 (floors 54 s and 101 s).
DEFAULT_CONCURRENT_DOMAINS = 32

COUNT_METRICS = (
    "accepted_count",
    "delivered_count",
    "failed_count",
    "permanent_failed_count",
    "temporary_failed_count",
    "opened_count",
    "unique_opened_count",
    "clicked_count",
    "unique_clicked_count",
    "complained_count",
    "unsubscribed_count",
    "bounced_count",
    "hard_bounces_count",
    "soft_bounces_count",
)
# Mailgun sends rates as strings; records carry them as numbers, unscaled: ratios from 0 to 1
# (the official OpenAPI example answers clicked_rate "0.8300" for 50 clicked of 60 delivered).
RATE_METRICS = (
    "delivered_rate",
    "opened_rate",
    "unique_opened_rate",
    "clicked_rate",
    "complained_rate",
    "unsubscribed_rate",
    "bounce_rate",
    "permanent_fail_rate",
    "temporary_fail_rate",
)

# "Mailgun's Metrics API ... supports up to 10 counts and rates" per query (Metric
# Definitions, Mailgun's user manual): every row is asked in groups of at most 10.
METRICS_PER_QUERY = 10
MAX_DIMENSIONS = 3  # "... as well as 3 dimensions" (the same page)
METRIC_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    (*COUNT_METRICS, *RATE_METRICS)[i : i + METRICS_PER_QUERY]
    for i in range(0, len(COUNT_METRICS) + len(RATE_METRICS), METRICS_PER_QUERY)
)


def configured_names(configured: list[str] | None) -> list[str]:
    """The `domains` setting as names: an item may hold several, comma-separated (Meltano
    passes MAILGUN_DOMAIN=a.com,b.com to this list setting as ["a.com,b.com"])."""
    return [name.strip() for item in configured or [] for name in item.split(",") if name.strip()]


def concurrent_domains(config: Any) -> int:
    """Domains read at a time, from the `concurrent_domains` setting (at least one)."""
    return max(1, int(config.get("concurrent_domains") or DEFAULT_CONCURRENT_DOMAINS))


def config_moment(config: Any, key: str) -> datetime | None:
    """A date-time setting (ISO 8601, `Z` allowed) as an aware datetime, UTC when it names
    no zone; None when unset."""
    if not config.get(key):
        return None
    moment = datetime.fromisoformat(str(config[key]).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def load_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped in tap_mailgun/schemas/."""
    text = (resources.files("tap_mailgun") / "schemas" / f"{name}.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class DomainNames:
    """The domains a run reads: the configured ones, or else every active domain of the
    account, listed once by the `domains` stream."""

    def __init__(self, configured: list[str] | None, listing: DomainsStream) -> None:
        """`configured` is the `domains` setting; `listing` reads the account's domains."""
        self.configured = configured_names(configured)
        self._listing = listing
        self.created: dict[str, datetime] = {}
        """When each listed domain was created (empty when the domains are configured)."""

    @cached_property
    def names(self) -> list[str]:
        """The configured domains, or else every active domain of the account (read once)."""
        if self.configured:
            return self.configured
        listing = self._listing
        names = []
        for row in listing.request_records(None):
            if row.get("state") != "active":
                continue
            names.append(row["name"])
            with suppress(KeyError, TypeError, ValueError):  # none, or not a date: unknown
                self.created[row["name"]] = datetime.fromisoformat(
                    rfc2822_to_iso(row["created_at"])
                )
        listing.logger.info("No domains configured; reading the %d active ones", len(names))
        return names


class DomainPartitionedStream(MailgunStream):
    """A stream read once per sending domain: one partition, one bookmark, per domain."""

    def __init__(
        self, tap: Tap, report: RunReport | None = None, domains: DomainNames | None = None
    ) -> None:
        """A stream of `tap` over `domains` (by default its own listing of them)."""
        super().__init__(tap, report)
        self.domains = domains or DomainNames(
            self.config.get("domains"), DomainsStream(tap, self.report)
        )
        self._prefetch: OrderedPrefetch[str, dict[str, Any]] | None = None

    @property
    @override
    def partitions(self) -> list[dict[str, Any]]:
        """One partition per configured (or, when none are, per active) domain, except those
        Mailgun already said it does not know in this run."""
        unknown = self.report.unknown_domains
        names = [d for d in self.domains.names if d not in unknown]
        self._forget_other_domains(names)
        return [{"domain": d} for d in names]

    _pruned = False

    def _forget_other_domains(self, names: list[str]) -> None:
        """Once a run, drop the state of domains this run does not read (removed from the
        account or from `domains`): otherwise the state grows with every domain ever read,
        and is written whole with every STATE message. Safe: a domain that comes back is
        read again from start_date (at least once, never lost)."""
        if self._pruned:
            return
        self._pruned = True
        state = self.stream_state
        kept = set(names)
        partitions = state.get("partitions") or []
        remaining = [p for p in partitions if (p.get("context") or {}).get("domain") in kept]
        if len(remaining) != len(partitions):
            state["partitions"] = remaining

    @override
    def request_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Nothing without a domain: with no domain to read, the SDK still makes one
        unpartitioned pass, which must not request /v3/{domain}/... literally."""
        if not context:
            self.logger.warning("%s: no domain to read in this run", self.name)
            return []
        return super().request_records(context)

    @override
    def read_pages(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """This domain's items, read ahead with the next domains' by worker threads
        (`concurrent_domains` at a time) while the SDK emits them in order."""
        workers = concurrent_domains(self.config)
        if not context or workers <= 1:
            return super().read_pages(context)
        domain = str(context["domain"])
        if self._prefetch is None or domain not in self._prefetch:
            self._start_prefetch(domain, workers)
        if self._prefetch is None:
            return super().read_pages(context)
        return self._prefetch.items(domain)

    @override
    def stop_reading(self) -> None:
        """Stop the workers reading ahead, letting the requests in flight end first: the
        run's one-line error must be the last thing it says."""
        if self._prefetch is not None:
            self._prefetch.close(wait=STOP_WAIT_SECONDS)
            self._prefetch = None

    def _start_prefetch(self, first: str, workers: int) -> None:
        """Read ahead from `first` through the rest of this run's domains."""
        self.stop_reading()
        names = [str(p["domain"]) for p in self.partitions]
        if first not in names:
            return
        names = names[names.index(first) :]
        # Workers read a partition's bookmark before the SDK starts it: the starting values
        # the SDK would write then are written now, from the main thread.
        prime_starting_values(self, [{"domain": name} for name in names])
        self.keep_connections(workers)
        read = super().read_pages
        self._prefetch = OrderedPrefetch(names, lambda d: read({"domain": d}), workers=workers)

    def bookmark(self, context: Context | None) -> datetime | None:
        """This partition's bookmark from state (UTC), ignoring start_date."""
        state = self.get_context_state(context)
        value = state.get("replication_key_value")
        if not value or state.get("replication_key") != self.replication_key:
            return None
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class DomainsStream(MailgunStream):
    """Sending domains: GET /v4/domains, skip/limit paging."""

    name = "domains"
    path = "/v4/domains"
    primary_keys = ("name",)
    replication_key = None
    page_size = 1000
    schema = load_schema("domains")  # tap_mailgun/schemas/domains.json: twenty fields

    @override
    def get_new_paginator(self) -> TotalPaginator:
        """skip/limit: the next skip is this one plus a page, until `total_count` is reached."""
        return TotalPaginator(self.page_size or 1000, lambda body: body.get("total_count"))

    @override
    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        """limit and skip on every page."""
        return {"limit": self.page_size, "skip": next_page_token or 0}

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The listing, each domain with the DNS states of its details (one more request
        per domain, `concurrent_domains` at a time, in the listing's order)."""
        workers = concurrent_domains(self.config)
        rows = iter(self.request_records(context))
        self.keep_connections(workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns") as pool:
            while batch := list(islice(rows, workers * 4)):  # memory: a few batches at most
                states = pool.map(self.dns_states, [str(r["name"]) for r in batch])
                for row, dns in zip(batch, states, strict=True):
                    row["dns"] = dns
                    yield row

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        """The SMTP password is a credential: it never leaves the tap."""
        row.pop("smtp_password", None)
        return _iso_created_at(row)

    def dns_states(self, name: str) -> dict[str, str]:
        """SPF, DKIM, MX and tracking CNAME states of a domain, from GET /v4/domains/{name};
        all `unknown` when the details cannot be read (the listing still syncs)."""
        url = f"{self.url_base}/v4/domains/{quote(name, safe='')}"
        prepared = self.build_prepared_request(method="GET", url=url, headers=self.http_headers)
        try:
            response = send_with_retries(self, prepared)
            details = msgspec.json.decode(response.content)
        except MailgunRunError:
            raise
        except (
            FatalAPIError,
            RetriableAPIError,
            requests.RequestException,
            msgspec.DecodeError,
        ) as exc:
            self.logger.warning("DNS states of %s unknown: %s", name, exc)
            details = {}
        return dns_states(details if isinstance(details, dict) else {})


class EventsStream(DomainPartitionedStream):
    """Events per domain, ascending, in a window that ends `event_lag_minutes` ago.

    Mailgun may store an event late, into a page already read; a page is final only once its
    newest event is about 30 minutes old. So each run reads [bookmark, now - lag): every page
    it reads is final, and the late events of the last half hour are read by the next run.
    """

    name = "events"
    path = "/v3/{domain}/events"
    primary_keys = ("id", "timestamp")  # Mailgun's id is unique only within a day
    replication_key = "timestamp"
    is_sorted = True  # ascending=yes: bookmarks advance with every record, resumable anywhere
    # Records are built from JSON-native values and the schema accepts additional properties,
    # so conforming types would change nothing; skipping it is most of the tap's speed.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    @cached_property
    @override
    def schema(self) -> dict[str, Any]:
        """tap_mailgun/schemas/events.json, shared with the webhook_events stream."""
        return load_schema("events")

    @cached_property
    def window_end(self) -> datetime:
        """The end of this run's window, the same for every domain: now - event_lag_minutes,
        or end_date when earlier."""
        lag = self.config.get("event_lag_minutes", DEFAULT_EVENT_LAG_MINUTES)
        end = datetime.now(timezone.utc) - timedelta(minutes=float(lag))
        until = config_moment(self.config, "end_date")
        return end if until is None else min(end, until)

    def window_begin(self, context: Context | None) -> datetime:
        """The partition's bookmark, else start_date, else the longest retention ago."""
        start = self.get_starting_timestamp(context)
        if start is None:
            return self.window_end - timedelta(days=EVENT_RETENTION_DAYS)
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        return start - BOOKMARK_MARGIN

    @override
    def first_page_params(self, context: Context | None) -> dict[str, Any]:
        """The window, ascending, 300 a page, and the optional event-type filter."""
        params: dict[str, Any] = {
            "begin": f"{self.window_begin(context).timestamp():.6f}",
            "end": f"{self.window_end.timestamp():.6f}",
            "ascending": "yes",
            "limit": EVENTS_PAGE_LIMIT,
        }
        if self.config.get("event_types"):
            params["event"] = " OR ".join(self.config["event_types"])
        return params

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Events of one domain as records; nothing to read when the window is empty."""
        if not context:
            yield from self.request_records(context)  # warns, reads nothing
            return
        if self.window_begin(context) >= self.window_end:
            self.logger.info("events of %s: up to date within the lag window", context["domain"])
            return
        domain = context["domain"]
        # The window starts BOOKMARK_MARGIN early, so events just below the bookmark (already
        # emitted) come again; emitting them would break the ascending order the SDK checks.
        # Compared as strings in the records' ISO format, as the SDK compares them.
        since = self.bookmark(context)
        emitted_up_to = (
            since.astimezone(timezone.utc).isoformat(timespec="microseconds") if since else None
        )
        for item in self.request_records(context):
            record = event_record(item, domain)
            if emitted_up_to and record["timestamp"] < emitted_up_to:
                continue
            yield record


class SuppressionStream(DomainPartitionedStream):
    """Bounces, complaints or unsubscribes of a domain, listed alphabetically by address.

    The API has no time filter: every run lists all, and emits those created at or after the
    bookmark (the first run emits all). Not sorted by time, so the bookmark moves only when a
    domain's listing completes. An address added during the listing behind the cursor (or
    after a short page, which ends the listing) is not seen by this run, so the bookmark never
    passes the listing's start (by Mailgun's clock, less LISTING_CLOCK_MARGIN): the next run
    emits it.
    """

    primary_keys = ("domain", "address")
    replication_key = "created_at"
    is_sorted = False
    page_size = 1000  # the API's maximum
    kind_properties: ClassVar[tuple[th.Property[Any], ...]] = ()

    @cached_property
    @override
    def schema(self) -> dict[str, Any]:
        """domain, address, created_at, and what this kind adds."""
        return th.PropertiesList(
            th.Property("domain", th.StringType, required=True),
            th.Property("address", th.StringType, required=True),
            th.Property("created_at", th.DateTimeType),
            *self.kind_properties,
            additional_properties=True,
        ).to_dict()

    @override
    def get_new_paginator(self) -> ShortPagePaginator:
        """`paging.next` links, ending at a short page: the bookmark's cap makes it safe."""
        return ShortPagePaginator(self.url_base, self.page_size or 1000)

    @cached_property
    def _listing_started(self) -> dict[str, datetime]:
        """When each domain's listing started (its first page), set by the thread reading it."""
        return {}

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        """The page's items; the first page's Date tells when the listing started (else this
        machine's clock when the request was sent)."""
        domain = domain_of(response) or ""
        if domain not in self._listing_started:
            sent = datetime.now(timezone.utc) - response.elapsed
            self._listing_started[domain] = server_time(response) or sent
        return super().parse_response(response)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Items created at or after the bookmark, with ISO `created_at`."""
        since = self.bookmark(context)
        domain = str((context or {}).get("domain", ""))
        started_here = datetime.now(timezone.utc)  # if no page was read
        for item in self.request_records(context):
            record = _iso_created_at(snake_keys(item))
            created = record.get("created_at")
            if since and created and datetime.fromisoformat(created) < since:
                continue
            yield record
        # Completed (a failed listing dropped its progress): cap what becomes the bookmark.
        progress = progress_markers(self.get_context_state(context))
        newest = progress.get("replication_key_value")
        started = self._listing_started.pop(domain, None) or started_here
        cap = (started - LISTING_CLOCK_MARGIN).astimezone(timezone.utc)
        if newest and str(newest) > cap.isoformat(timespec="microseconds"):
            progress["replication_key_value"] = cap.isoformat(timespec="microseconds")


class BouncesStream(SuppressionStream):
    """Addresses that bounced: GET /v3/{domain}/bounces."""

    name = "bounces"
    path = "/v3/{domain}/bounces"
    kind_properties = (
        th.Property("code", th.CustomType({"type": ["string", "integer", "null"]})),
        th.Property("error", th.StringType),
    )


class ComplaintsStream(SuppressionStream):
    """Addresses that complained: GET /v3/{domain}/complaints."""

    name = "complaints"
    path = "/v3/{domain}/complaints"
    kind_properties = (th.Property("count", th.IntegerType),)


class UnsubscribesStream(SuppressionStream):
    """Addresses that unsubscribed: GET /v3/{domain}/unsubscribes."""

    name = "unsubscribes"
    path = "/v3/{domain}/unsubscribes"
    kind_properties = (th.Property("tags", th.ArrayType(th.StringType)),)


class AccountWideStream(MailgunStream):
    """A stream read once for the whole account, which earlier versions of the tap read per
    domain: the per-domain partitions they left in the state are not read as partitions,
    and are dropped once the stream has been read."""

    @property
    @override
    def partitions(self) -> list[dict[str, Any]] | None:
        """None: one read for the account (the SDK would take the state's old partitions)."""
        return None

    def forget_domain_partitions(self) -> None:
        """Drop the per-domain state an earlier version left: it only grows the state."""
        self.stream_state.pop("partitions", None)


class AnalyticsStream(AccountWideStream):
    """A query of Mailgun's v1 analytics API (POST /v1/analytics/...): the query and its
    paging (`pagination`: sort, skip, limit) go in the JSON body, read until the
    `pagination.total` the answer states."""

    http_method = "POST"
    page_limit: ClassVar[int]  # `pagination.limit`: rows a page

    @override
    def get_new_paginator(self) -> TotalPaginator:
        """Offset paging in the body, until `pagination.total` is reached."""
        return TotalPaginator(
            self.page_limit, lambda body: (body.get("pagination") or {}).get("total")
        )

    @override
    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        """Everything goes in the body."""
        return {}

    def pagination(self, sort: str, next_page_token: Any) -> dict[str, Any]:
        """The body's `pagination` of this page, in the order `sort` (skip paging needs a
        stable one)."""
        return {"sort": sort, "skip": next_page_token or 0, "limit": self.page_limit}


class TagsStream(AnalyticsStream):
    """The account's tags: POST /v1/analytics/tags, with the subaccounts' when
    `include_subaccounts` is set (tags belong to an account, not to a domain)."""

    name = "tags"
    path = "/v1/analytics/tags"
    primary_keys = ("account_id", "tag")
    replication_key = None
    page_limit = 1000  # the API's maximum
    schema = th.PropertiesList(
        th.Property("account_id", th.StringType, required=True),
        th.Property("tag", th.StringType, required=True),
        th.Property("description", th.StringType),
        th.Property("first_seen", th.DateTimeType),
        th.Property("last_seen", th.DateTimeType),
        th.Property("account_name", th.StringType),
        th.Property("parent_account_id", th.StringType),
        th.Property("subaccount", th.StringType),
        additional_properties=True,
    ).to_dict()

    @override
    def prepare_request_payload(
        self, context: Context | None, next_page_token: Any
    ) -> dict[str, Any]:
        """This page, by tag, with the total."""
        return {
            "pagination": {**self.pagination("tag:asc", next_page_token), "include_total": True},
            "include_subaccounts": bool(self.config.get("include_subaccounts")),
        }

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        """snake_case keys; `subaccount` is the account of a subaccount's tag."""
        self.forget_domain_partitions()
        record = cast("Record", snake_keys(row))
        own = record.get("account_id") == record.get("parent_account_id")
        if self.config.get("include_subaccounts"):
            record["subaccount"] = None if own else record.get("account_id")
        return record


class MetricsStream(AnalyticsStream):
    """Counts and rates from POST /v1/analytics/metrics, per time bucket and domain.

    One query for the whole account (filtered to `domains` when set): the domain dimension
    splits the rows, so the requests do not grow with the number of domains. Metrics settle
    for a while, so each run re-reads `metrics_lookback_days` before the bookmark; rows come
    back with the same key and replace the earlier ones downstream.
    """

    path = "/v1/analytics/metrics"
    replication_key = "time"
    is_sorted = False
    page_limit = 300
    _metric_group: tuple[str, ...] = METRIC_GROUPS[0]  # the group the next query asks
    dimensions: ClassVar[tuple[str, ...]] = ("time", "domain")

    @cached_property
    def configured_domains(self) -> list[str]:
        """The `domains` setting: when set, the query is filtered to them."""
        return configured_names(self.config.get("domains"))

    @property
    def queried_dimensions(self) -> list[str]:
        """The dimensions asked: the stream's, and `subaccount` when subaccounts are included
        and Mailgun's limit of 3 dimensions leaves room."""
        wanted = list(self.dimensions)
        if self.config.get("include_subaccounts") and len(wanted) < MAX_DIMENSIONS:
            wanted.append("subaccount")
        return wanted

    @cached_property
    @override
    def schema(self) -> dict[str, Any]:
        """Key dimensions, the resolution, every count (integer) and rate (number)."""
        keys = [th.Property(d, th.StringType, required=True) for d in self.dimensions]
        keys[0] = th.Property("time", th.DateTimeType, required=True)
        return th.PropertiesList(
            *keys,
            th.Property("subaccount", th.StringType),
            th.Property("resolution", th.StringType),
            *(th.Property(m, th.IntegerType) for m in COUNT_METRICS),
            *(th.Property(m, th.NumberType) for m in RATE_METRICS),
        ).to_dict()

    @cached_property
    def window_end(self) -> datetime:
        """Now, once per run: every page of an offset-paged query must ask the same."""
        return datetime.now(timezone.utc)

    @override
    def prepare_request_payload(
        self, context: Context | None, next_page_token: Any
    ) -> dict[str, Any]:
        """The query: window, resolution, dimensions, metrics, the domains, this page."""
        now = self.window_end
        since = self.bookmark(context)
        lookback = timedelta(
            days=float(self.config.get("metrics_lookback_days", DEFAULT_METRICS_LOOKBACK_DAYS))
        )
        if since is not None:
            start = since - lookback
        else:
            configured = config_moment(self.config, "start_date")
            start = configured or now - timedelta(days=EVENT_RETENTION_DAYS)
        resolution = self.config.get("metrics_resolution", "day")
        query: dict[str, Any] = {
            # A row's counts cover only the part of its bucket inside the query: start on a
            # bucket boundary, or the first row would replace a full one with a partial one.
            "start": format_datetime(bucket_start(start, resolution)),
            "end": format_datetime(now),
            "resolution": resolution,
            "dimensions": self.queried_dimensions,
            "metrics": list(self._metric_group),
            "include_subaccounts": bool(self.config.get("include_subaccounts")),
            "include_aggregates": False,
            "pagination": self.pagination("time:asc", next_page_token),
        }
        if self.configured_domains:
            values = [{"label": d, "value": d} for d in self.configured_domains]
            domain_is = {"attribute": "domain", "comparator": "=", "values": values}
            query["filter"] = {"AND": [domain_is]}
        return query

    def bookmark(self, context: Context | None) -> datetime | None:
        """The stream's bookmark; from a state of the tap's per-domain metrics (before they
        were read for the whole account), the earliest of its domains' bookmarks."""
        state = self.stream_state
        values = [state.get("replication_key_value")]
        if not values[0]:
            values = [p.get("replication_key_value") for p in state.get("partitions") or []]
        moments = [datetime.fromisoformat(str(v).replace("Z", "+00:00")) for v in values if v]
        if not moments:
            return None
        return min(m if m.tzinfo else m.replace(tzinfo=timezone.utc) for m in moments)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """One record per time bucket (and tag): dimensions as columns, then every metric,
        merged from one query per group of metrics.

        A row missing some metrics would replace a complete one downstream: when any query
        of the partition fails, none of its rows is emitted (the failure is reported).
        """
        resolution = self.config.get("metrics_resolution", "day")
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for group in METRIC_GROUPS:
            self._metric_group = group
            for item in self.request_records(context):
                dimensions = item.get("dimensions") or []
                key = tuple((d.get("dimension"), d.get("value")) for d in dimensions)
                record = rows.get(key)
                if record is None:
                    record = rows[key] = self._new_record(dimensions, resolution)
                metrics = item.get("metrics") or {}
                for name in group:
                    value = metrics.get(name)
                    record[name] = _rate(value) if name in RATE_METRICS else value
            if self.report.failed(self.name, context or {}):
                return  # the other groups' queries would be wasted
        # The per-domain bookmarks of earlier versions are superseded by the stream's own.
        self.forget_domain_partitions()
        yield from rows.values()

    @staticmethod
    def _new_record(dimensions: list[dict[str, Any]], resolution: str) -> dict[str, Any]:
        """A row with its dimensions as columns and every metric still unknown."""
        record: dict[str, Any] = {"resolution": resolution}
        for dim in dimensions:
            value: Any = dim.get("value")
            record[dim["dimension"]] = (
                rfc2822_to_iso(value) if dim["dimension"] == "time" else value
            )
        record.update(dict.fromkeys((*COUNT_METRICS, *RATE_METRICS)))
        return record


def _iso_created_at(record: dict[str, Any]) -> dict[str, Any]:
    """The record with Mailgun's RFC 2822 `created_at`, when it has one, as ISO-8601 UTC."""
    if record.get("created_at"):
        record["created_at"] = rfc2822_to_iso(record["created_at"])
    return record


def bucket_start(moment: datetime, resolution: str) -> datetime:
    """The start (UTC) of the hour, day or month bucket `moment` falls in."""
    moment = moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    if resolution == "hour":
        return moment
    moment = moment.replace(hour=0)
    return moment.replace(day=1) if resolution == "month" else moment


def _rate(value: Any) -> float | None:
    """A percentage string as a number; None when Mailgun has none."""
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class DomainMetricsStream(MetricsStream):
    """Delivery and engagement counts and rates per domain and time bucket."""

    name = "domain_metrics"
    primary_keys = ("domain", "time")
    dimensions = ("time", "domain")


class TagMetricsStream(MetricsStream):
    """The same per tag of a domain."""

    name = "tag_metrics"
    primary_keys = ("domain", "tag", "time")
    dimensions = ("time", "domain", "tag")


class MailingListsStream(MailgunStream):
    """Mailing lists of the account: GET /v3/lists/pages."""

    name = "mailing_lists"
    path = "/v3/lists/pages"
    primary_keys = ("address",)
    replication_key = None
    page_size = 100
    schema = th.PropertiesList(
        th.Property("address", th.StringType, required=True),
        th.Property("name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("access_level", th.StringType),
        th.Property("reply_preference", th.StringType),
        th.Property("created_at", th.DateTimeType),
        th.Property("members_count", th.IntegerType),
        additional_properties=True,
    ).to_dict()

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        """ISO `created_at`."""
        return _iso_created_at(row)

    @override
    def get_child_context(self, record: Record, context: Context | None) -> Context:
        """Members are read per list."""
        return {"list_address": record["address"]}


class ListMembersStream(MailgunStream):
    """Members of each mailing list: GET /v3/lists/{list_address}/members/pages."""

    name = "list_members"
    path = "/v3/lists/{list_address}/members/pages"
    parent_stream_type = MailingListsStream
    # Read whole every run: nothing per list is worth keeping, and a partition per list would
    # grow the state with every list ever read.
    state_partitioning_keys: ClassVar[list[str]] = []
    primary_keys = ("list_address", "address")
    replication_key = None
    page_size = 100
    schema = th.PropertiesList(
        th.Property("list_address", th.StringType, required=True),
        th.Property("address", th.StringType, required=True),
        th.Property("name", th.StringType),
        th.Property("vars", th.ObjectType(additional_properties=True)),
        th.Property("subscribed", th.BooleanType),
        additional_properties=True,
    ).to_dict()

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        """The list's address on each member (the SDK adds only state-partition keys)."""
        row["list_address"] = (context or {}).get("list_address")
        return row

    @override
    def validate_response(self, response: requests.Response) -> None:
        """404: the list was deleted after the lists were read; nothing of it is left."""
        if response.status_code == HTTPStatus.NOT_FOUND:
            address = unquote(urlsplit(response.url).path.split("/")[3])
            raise MailgunGoneError(f"Mailing list {address} was deleted during the run (404)")
        super().validate_response(response)


# Every stream of the tap (webhook_events, optional, is added by the tap itself).
STREAM_TYPES: tuple[type[MailgunStream], ...] = (
    DomainsStream,
    EventsStream,
    BouncesStream,
    ComplaintsStream,
    UnsubscribesStream,
    TagsStream,
    DomainMetricsStream,
    TagMetricsStream,
    MailingListsStream,
    ListMembersStream,
)


def build_streams(
    tap: Tap, report: RunReport, stream_types: tuple[type[MailgunStream], ...] = STREAM_TYPES
) -> list[MailgunStream]:
    """Every stream of `stream_types` for one run of `tap`: they share `report`, and the
    per-domain streams one list of domains, read from the `domains` stream when needed."""
    listing = DomainsStream(tap, report)
    domains = DomainNames(tap.config.get("domains"), listing)
    found: list[MailgunStream] = [listing]
    for stream_type in stream_types:
        if issubclass(stream_type, DomainPartitionedStream):
            found.append(stream_type(tap, report, domains))
        elif stream_type is not DomainsStream:
            found.append(stream_type(tap, report))
    return found
