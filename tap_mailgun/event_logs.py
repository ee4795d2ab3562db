"""The `events` stream from the Logs API (POST /v1/analytics/logs), `event_source: logs`.

One account-wide query per run replaces one Events API query per domain; the state is the
same: one bookmark per domain (the partitions of EventsStream), so switching `event_source`
either way carries the bookmarks over.

- window: [the earliest bookmark of the domains in scope, now - event_lag_minutes), both
  in RFC 2822, whole seconds (the API's precision): the start is floored to its second, so
  the boundary second is read again and each domain drops what its bookmark already covers.
- bookmarks: a record advances its own domain's bookmark (`domain.name`), whatever partition
  the SDK is walking (the first walk reads the whole account; the others find it read). A
  bookmark is the domain's last emitted event, as with the Events API.
- read through: a window read to its end has read every domain in scope up to that end,
  with or without events; each of their states keeps it (`read_through`), and a domain begins
  at the later of its bookmark and its read-through. Without it one quiet domain (no event for
  days) would start every run's window at its old bookmark, and each run would read the whole
  account again. A domain new to the account's listing begins no earlier than its
  `created_at`: it has no event before, and a new domain must not make a run read the
  retention window again.
- resume: a record older than its domain's bookmark is dropped, compared by the millisecond
  (the Logs API's precision). A bookmark left by the Events API has microseconds: a record
  of its millisecond may be one emitted already or one not yet, so it is emitted (target-brevo
  applies an event once, whichever source and precision) and leaves the bookmark as is.
- boundaries: whether `start` and `end` include their second is not documented, so each
  query starts a second early and the tap keeps [start, end) of the slice itself.
- paging: `pagination.token` until the last page (no `next`), 100 items a page (the
  documented maximum), `sort: timestamp:asc`. An empty page that still has a `next`, or a
  token seen before, ends the query as an error would (the slice fails, no read_through):
  not documented either way, and the events after it must not be taken as read.
- time slices: 100 items a page, one page per round trip, bound a single query to 400 events a
  second at 250 ms; so the window is cut into slices of whole seconds, `concurrent_time_slices`
  of them read at once by worker threads (`OrderedPrefetch`: bounded buffers) and emitted in
  order, slice after slice: the output is what one query would give. A slice that fails stops
  the read there (the later ones are not emitted: no bookmark passes the failed slice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator
from typing_extensions import override

from tap_mailgun.client import MailgunStream
from tap_mailgun.prefetch import STOP_WAIT_SECONDS, OrderedPrefetch
from tap_mailgun.records import event_record
from tap_mailgun.sdk_compat import StateOfRecordPartition
from tap_mailgun.streams import (
    EVENT_RETENTION_DAYS,
    LISTING_CLOCK_MARGIN,
    EventsStream,
    config_moment,
)

if TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context, Record

LOGS_PAGE_LIMIT = 100  # "The maximum number of items returned (100 max)" (the spec)
# Time slices of a window read at once (`concurrent_time_slices`): bench/README.md, "The events
# path": at 250 ms a request one query gives at most 400 events/s (a page of 100 a round
# trip); 32 slices gave 2,770 events/s. Short windows get fewer slices (MIN_SLICE): a
# 15-minute run makes 90 first requests (3 rounds of 32 at once), a first run's 30 days 256
# (8 rounds), even for an empty account.
DEFAULT_CONCURRENT_TIME_SLICES = 32
# A slice read ahead is held until its turn, at most this many items: memory stays bounded
# (concurrent_time_slices x this), and a slice that holds more waits for its turn to go on.
# So the window is cut finer than the slices read at once, SLICES_PER_READER each, though no
# finer than MIN_SLICE (each slice costs a request even when empty). A busy account's
# 15-minute window holds thousands of events a minute: slices of a minute held more than
# SLICE_BUFFER and were read one page a round trip (934 events/s for 60,000 events in 20
# minutes, bench/README.md "The events path"); slices of 10 s are read ahead whole.
SLICE_BUFFER = 2000
SLICES_PER_READER = 8
MIN_SLICE = timedelta(seconds=10)
# Mailgun does not document whether `start` and `end` include their second (README, "The Logs
# API: what Mailgun documents"). Each slice asks from a second before its start and keeps
# only [start, end) itself: an event on a boundary's .000 is read once whichever they are.
BOUNDARY_OVERLAP = timedelta(seconds=1)
READ_THROUGH = "read_through"  # a domain's state key: its events are all read up to this time

Slice = tuple[datetime, datetime]


class QueryCutShort(RetriableAPIError):
    """Mailgun ended a Logs API query before its end (the reason is the message)."""


class LogsPaginator(BaseAPIPaginator[str | None]):
    """Follows `pagination.next` tokens and stops on a page without one. An empty page that
    has one, or a token already followed (which would loop), raises QueryCutShort: the query
    is not read to its end, and its events after that page must not be taken as read."""

    def __init__(self, body: Callable[[requests.Response], dict[str, Any]]) -> None:
        """`body` gives a response's decoded body (the stream decodes each page once)."""
        super().__init__(None)
        self._body = body
        self._followed: set[str] = set()

    @override
    def continue_if_empty(self, response: requests.Response) -> bool:
        """The SDK asks this of an empty page, and stops: a page that says more follow
        cuts the query short."""
        if (self._body(response).get("pagination") or {}).get("next"):
            raise QueryCutShort("an empty page with a next token")
        return False

    @override
    def get_next(self, response: requests.Response) -> str | None:
        """The next page's token, or None when this page is the last."""
        token = (self._body(response).get("pagination") or {}).get("next")
        if not isinstance(token, str) or not token:
            return None
        if token in self._followed:
            raise QueryCutShort("a next token it had sent before")
        self._followed.add(token)
        return token


def slice_context(piece: Slice) -> dict[str, str]:
    """The context of a slice's requests: its `start` and `end` as the Logs API takes them
    (RFC 2822, whole seconds), `start` a second early (BOUNDARY_OVERLAP); plain strings, as
    the SDK logs a context."""
    start, end = piece
    return {"start": format_datetime(start - BOUNDARY_OVERLAP), "end": format_datetime(end)}


def in_slice(item: dict[str, Any], piece: Slice) -> bool:
    """Whether a Logs API item belongs to the slice [start, end), by its `@timestamp`
    (an item without a readable one is kept: event_record reports it)."""
    try:
        moment = datetime.fromisoformat(str(item["@timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return True
    return piece[0] <= moment < piece[1]


def millisecond(iso: str) -> str:
    """An ISO-8601 UTC time (as records and bookmarks hold it) cut to its millisecond, in the
    same format: 2026-11-01T12:00:00.123456+00:00 becomes 2026-11-01T12:00:00.123000+00:00."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment.isoformat(timespec="microseconds")


class LogsEventsStream(StateOfRecordPartition, EventsStream):
    """Events of the whole account from the Logs API, one bookmark per domain."""

    path = "/v1/analytics/logs"
    payload_as_json = True

    @override
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """EventsStream's, queried with POST and a JSON body."""
        super().__init__(*args, **kwargs)
        self.http_method = "POST"

    @cached_property
    @override
    def window_end(self) -> datetime:
        """now - event_lag_minutes, down to the second: `end` has no finer precision."""
        return super().window_end.replace(microsecond=0)

    @override
    def get_new_paginator(self) -> LogsPaginator:
        """Token paging."""
        return LogsPaginator(self._page_body)

    def _page_body(self, response: requests.Response) -> dict[str, Any]:
        """A page's body, decoded once (by validate_response) for the parser and the paginator."""
        decoded: tuple[requests.Response, dict[str, Any]] | None = getattr(
            self._decoded, "last", None
        )
        if decoded and decoded[0] is response:
            return decoded[1]
        body = msgspec.json.decode(response.content)
        return body if isinstance(body, dict) else {}

    @override
    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        """Everything is in the body."""
        return {}

    @override
    def prepare_request_payload(
        self, context: Context | None, next_page_token: str | None
    ) -> dict[str, Any]:
        """The window, the filters and the page: the same query on every page, plus the token."""
        pagination: dict[str, Any] = {"sort": "timestamp:asc", "limit": LOGS_PAGE_LIMIT}
        if next_page_token:
            pagination["token"] = next_page_token
        window = context or slice_context((self.window_start, self.window_end))
        body: dict[str, Any] = {
            "start": window["start"],
            "end": window["end"],
            "include_subaccounts": bool(self.config.get("include_subaccounts", False)),
            "pagination": pagination,
        }
        if self.domains.configured:
            values = [{"label": name, "value": name} for name in self.domains.configured]
            body["filter"] = {"AND": [{"attribute": "domain", "comparator": "=", "values": values}]}
        if self.config.get("event_types"):
            body["events"] = list(self.config["event_types"])
        return body

    @override
    def _forget_other_domains(self, names: list[str]) -> None:
        """As for every domain stream, except when the query covers subaccounts without a
        `domains` filter: their domains may be missing from the account's listing, and their
        bookmarks are what keeps their events from being emitted twice."""
        if self.config.get("include_subaccounts") and not self.domains.configured:
            return
        super()._forget_other_domains(names)

    def domains_in_scope(self) -> list[str]:
        """The domains this run's query covers and whose bookmarks it keeps: the configured
        ones, else the account's (listed) and every domain the state has a bookmark of
        (a subaccount's domains are not in the account's listing)."""
        names = [p["domain"] for p in self.partitions]
        if self.domains.configured:
            return names
        state = self.stream_state.get("partitions") or []
        seen = [p.get("context", {}).get("domain") for p in state]
        return list(dict.fromkeys([*names, *(d for d in seen if isinstance(d, str))]))

    def domain_begin(self, domain: str) -> datetime:
        """Where `domain`'s unread events start: its bookmark, else start_date, else the
        longest retention before the window's end (also for no domain: ""); never before
        the end of the last window read through, nor before the domain was created."""
        since = self.bookmark({"domain": domain}) if domain else None
        if since is None:
            since = self.default_begin()
        later = [since]
        if domain:
            read = self.get_context_state({"domain": domain}).get(READ_THROUGH)
            if isinstance(read, str):
                later.append(datetime.fromisoformat(read))
            created = self.domains.created.get(domain)
            if created is not None:
                later.append(created - LISTING_CLOCK_MARGIN)
        return max(later)

    def default_begin(self) -> datetime:
        """Where a domain with no bookmark begins: start_date, else the longest retention."""
        start = config_moment(self.config, "start_date")
        return start or self.window_end - timedelta(days=EVENT_RETENTION_DAYS)

    @cached_property
    def window_start(self) -> datetime:
        """The earliest begin of the domains in scope, down to its second."""
        begins = [self.domain_begin(d) for d in self.domains_in_scope()]
        earliest = min(begins, default=self.domain_begin(""))
        return earliest.astimezone(timezone.utc).replace(microsecond=0)

    @property
    def readers(self) -> int:
        """Slices read at once (`concurrent_time_slices`)."""
        return int(self.config.get("concurrent_time_slices") or DEFAULT_CONCURRENT_TIME_SLICES)

    def time_slices(self) -> list[Slice]:
        """The window cut into slices of whole seconds, in order: SLICES_PER_READER for each
        slice read at once, none shorter than MIN_SLICE; one when one is read at a time."""
        start, end = self.window_start, self.window_end
        seconds = int((end - start).total_seconds())
        wanted = self.readers * SLICES_PER_READER if self.readers > 1 else 1
        count = max(1, min(wanted, seconds // int(MIN_SLICE.total_seconds())))
        bounds = [start + timedelta(seconds=seconds * i // count) for i in range(count)]
        return list(zip(bounds, [*bounds[1:], end], strict=True))

    @override
    def read_pages(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The window's items: one query per slice (the slice is the context of its
        requests), the slices read at once and yielded in order."""
        if context is not None:
            return MailgunStream.read_pages(self, context)
        return self._read_slices(self.time_slices())

    def _read_slice(self, piece: Slice) -> Iterable[dict[str, Any]]:
        """One slice's items: its query, without the overlap's second before it. A query
        Mailgun ended early fails the slice, as an error would: no read_through passes it."""
        try:
            for item in MailgunStream.read_pages(self, slice_context(piece)):
                if in_slice(item, piece):
                    yield item
        except QueryCutShort as cut:
            raise RetriableAPIError(
                f"Mailgun ended a Logs API query early ({cut}), from "
                f"{format_datetime(piece[0])}: the next run reads again from there"
            ) from None

    def _read_slices(self, slices: list[Slice]) -> Iterable[dict[str, Any]]:
        if len(slices) == 1:
            yield from self._read_slice(slices[0])
            return
        readers = min(self.readers, len(slices))
        self.keep_connections(readers)
        prefetch = OrderedPrefetch(slices, self._read_slice, workers=readers, buffered=SLICE_BUFFER)
        try:
            for piece in slices:
                yield from prefetch.items(piece)
        finally:
            # A read that stops (a failed slice, a run-stopping error) lets the requests in
            # flight end, so that no worker's log line follows the run's last word.
            prefetch.close(wait=STOP_WAIT_SECONDS)

    _read = False  # the first partition's walk reads the whole account

    @cached_property
    def _states(self) -> dict[str, dict[str, Any]]:
        """Each domain's partition state, as found once (a live part of the tap's state)."""
        return {}

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Every event of the window, once (on the first partition), as records; each domain's
        already emitted ones dropped."""
        if not context:
            yield from self.request_records(context)  # no domain at all: warns, reads nothing
            return
        if self._read:
            return
        self._read = True
        if self.window_start >= self.window_end:
            self.logger.info("events: up to date within the lag window")
            return
        cutoffs: dict[str, str | None] = {}
        for item in MailgunStream.request_records(self, None):
            record = event_record(item)
            domain = record["domain"]
            if domain not in cutoffs:
                since = self.bookmark({"domain": domain})
                cutoffs[domain] = millisecond(since.isoformat()) if since else None
            cutoff = cutoffs[domain]
            if cutoff and record["timestamp"] < cutoff:
                continue
            yield record
        if self.report.failed(self.name, {}):  # reported, and the read stopped there
            return
        # The window read to its end: every domain in scope, quiet or not, has nothing
        # unread before it.
        read = self.window_end.isoformat()
        for domain in self.domains_in_scope():
            self.get_context_state({"domain": domain})[READ_THROUGH] = read

    @override
    def record_partition(self, record: Record, context: Context | None) -> Context | None:
        """The record's domain; none when its bookmark is already later (a record of the
        bookmark's millisecond, when the bookmark came from the Events API)."""
        domain = record["domain"]
        partition = {"domain": domain}
        state = self._states.get(domain)
        if state is None:  # the SDK finds a partition's state by a scan of them all: once
            state = self._states[domain] = self.get_context_state(partition)
        since = state.get("replication_key_value")
        if since and str(record["timestamp"]) < str(since):
            return None
        return partition
