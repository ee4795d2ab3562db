"""The Mailgun REST client: regions, auth, paging, retries and errors, once for every stream.

Every quirk of the API lives here:
- regions: `us` is api.mailgun.net, `eu` is api.eu.mailgun.net; `base_url` overrides both.
- auth: HTTP basic, user `api`, password the key (only ever in the Authorization header).
- paging: listings answer `paging.next` URLs (MailgunPaginator). Events' links are always
  present, even on the last page, whose successor is empty; so paging stops on an empty page,
  and also on a missing, empty or already-followed link; suppression listings also on a short
  page (ShortPagePaginator). A next link is followed verbatim (it
  carries the query's window and filters) and only on the host the tap was configured for.
  Domains and metrics page by skip and limit up to the total they state (TotalPaginator).
- retries: every request is a read, so every failed exchange a retry may mend is retried:
  429, 5xx, connection errors, timeouts, an answer cut after its headers or undecodable; with
  exponential backoff and equal jitter, or the wait the server asks for (`Retry-After`
  header, `retry-seconds` body); `max_retries` bounds it. A 429 pauses every thread of the
  stream (Throttle): the workers reading several domains at once back off together. One
  that no retry can mend (a TLS certificate not trusted, a base_url requests cannot use:
  `refusal`) stops the run at once.
- errors: 401 names the host and region and stops the run, as does a host that cannot be
  reached (a name DNS does not know is not retried: it stays unknown); a 404 that is not
  Mailgun's JSON (its plain "404 page not found" for a path it has no API at) means base_url
  is wrong and stops the run too; a JSON 404 on a domain suggests the other region and fails
  only that domain's partitions;
  any other lasting failure fails only its partition (or its stream, for those read once).
  Failed partitions go to the RunReport the streams of a run share; the tap exits non-zero
  at the end, with one line per failure and no traceback.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import ParseResult, urlsplit

import msgspec
import requests
from requests.adapters import HTTPAdapter
from singer_sdk import RESTStream
from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator, BaseHATEOASPaginator, OffsetPaginator
from typing_extensions import override

from plugin_cli import SettingError, unresolved_host
from tap_mailgun.sdk_compat import (
    IndexedPartitionState,
    OneLineSyncErrors,
    SkipMaskWhenAllSelected,
    drop_progress_markers,
)

if TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

REGION_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
DEFAULT_MAX_RETRIES = 5
# The settings that say which Mailgun to reach and how: the tap's and the mapper's.
CONNECTION_SETTINGS = (
    th.Property(
        "api_key",
        th.StringType,
        required=True,
        secret=True,
        description="Mailgun private API key. Sent only as basic auth, never logged.",
    ),
    th.Property(
        "region",
        th.StringType,
        default="us",
        allowed_values=["us", "eu"],
        description="us (api.mailgun.net) or eu (api.eu.mailgun.net): where the account is.",
    ),
    th.Property(
        "base_url",
        th.StringType,
        description="API root overriding region, e.g. a local fake: http://127.0.0.1:8080.",
    ),
)
# Exponential backoff: 1 s, 2 s, 4 s ... capped; a server's own hint is capped the same way.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 60


class MailgunRunError(FatalAPIError):
    """An error no other partition would escape: the run stops with this message."""


class MailgunAuthError(MailgunRunError):
    """Mailgun refused the API key: every request would fail, so the run stops."""


class MailgunUnreachableError(MailgunRunError):
    """The API host could not be reached, retries included: every request would fail."""


class MailgunNoApiError(MailgunRunError):
    """Mailgun has no API at the path asked (404, not JSON): base_url is wrong for every stream."""


# What ends a run in one line, no traceback (TapMailgun.invoke): nothing else could sync.
ONE_LINE_ERRORS: tuple[type[Exception], ...] = (
    MailgunRunError,
    SettingError,
    ConfigValidationError,
)


class MailgunGoneError(FatalAPIError):
    """What was being read was deleted since it was listed (e.g. a mailing list): skipped."""


class MailgunUnknownDomainError(FatalAPIError):
    """Mailgun has no such domain (in this region): its other streams are skipped this run."""

    def __init__(self, message: str, domain: str) -> None:
        """`domain` is the name Mailgun did not know."""
        super().__init__(message)
        self.domain = domain


class RunReport:
    """What failed in one run, shared by its streams: the tap exits non-zero when anything did.

    Streams report here instead of to the tap, so the streams need nothing from the tap.
    """

    def __init__(self) -> None:
        """An empty report: nothing failed yet."""
        self.failures: list[str] = []  # one line per failed partition, for the user
        self.unknown_domains: set[str] = set()  # domains Mailgun answered 404 for: skipped
        self._failed: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()

    def report_failure(self, stream: str, context: Context, error: Exception) -> str:
        """Record a failed partition (e.g. one domain); return the line that says so."""
        if isinstance(error, MailgunUnknownDomainError):
            self.unknown_domains.add(error.domain)
            message = f"{error} (its other streams are skipped this run)"
        else:
            where = ", ".join(f"{k}={v}" for k, v in context.items())
            message = f"{stream} ({where}): {error}" if where else f"{stream}: {error}"
        self.failures.append(message)
        self._failed.add((stream, tuple(sorted(context.items()))))
        return message

    def failed(self, stream: str, context: Context) -> bool:
        """Whether this partition of `stream` was reported failed in this run."""
        return (stream, tuple(sorted(context.items()))) in self._failed


def resolve_base_url(config: dict[str, Any]) -> str:
    """The API root for the configured `base_url`, or else the `region` (us or eu)."""
    if config.get("base_url"):
        return str(config["base_url"]).rstrip("/")
    region = config.get("region") or "us"
    if region not in REGION_URLS:
        raise ValueError(f"region must be 'us' or 'eu', not {region!r}")
    return REGION_URLS[region]


def where(config: dict[str, Any]) -> str:
    """Where requests go, in words a person can check against their Mailgun account."""
    region = config.get("region") or "us"
    if config.get("base_url"):
        return f"{resolve_base_url(config)} (base_url, which overrides region {region})"
    return f"{resolve_base_url(config)} (region {region})"


def refusal(exc: requests.RequestException) -> str | None:
    """What makes a failed request one that no retry can mend, or None when one may.

    requests keeps the error it wraps in `args` (urllib3's, which keeps the ssl module's in
    its own `args` or `reason`): an untrusted certificate is found there.
    """
    unusable = (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidHeader,
    )
    if isinstance(exc, unusable):
        return str(exc)
    seen: list[object] = [exc]
    while seen:
        link = seen.pop()
        if isinstance(link, ssl.SSLCertVerificationError):
            return str(link)
        if isinstance(link, BaseException):
            seen.extend(a for a in (*link.args, getattr(link, "reason", None)) if a is not link)
    return None


def never_connected(exc: requests.RequestException) -> bool:
    """Whether no connection was made: requests raises ConnectionError for that, but also for
    a connection dropped later; urllib3's NewConnectionError (a ConnectTimeoutError) says so."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or any(
        k.__name__ == "ConnectTimeoutError" for k in type(reason).__mro__
    )


def retry_hint_seconds(response: requests.Response | None) -> float | None:
    """The wait a 429/5xx response asks for: `Retry-After` (seconds or date) or `retry-seconds`."""
    if response is None:
        return None
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(header)
            return max(0.0, moment.timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None
    if isinstance(body, dict):
        value = body.get("retry-seconds", body.get("retry_seconds"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return max(0.0, float(value))
    return None


def retry_wait_seconds(attempt: int, response: requests.Response | None) -> float:
    """The wait before retry number `attempt` + 1 (0-based): the server's hint when it gives
    one, else exponential with equal jitter; both capped at BACKOFF_CAP_SECONDS."""
    hint = retry_hint_seconds(response)
    if hint is not None:
        return min(hint, BACKOFF_CAP_SECONDS)
    # Equal jitter: half the cap, plus up to the other half at random. Full jitter (0 to cap)
    # can draw near zero every time and spend all tries in seconds.
    cap = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)
    return cap / 2 + random.uniform(0, cap / 2)


def server_time(response: requests.Response) -> datetime | None:
    """The moment Mailgun answered, by its own clock (the `Date` header), when it says."""
    try:
        moment = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Throttle:
    """One pause shared by the threads of a stream: after a 429, no thread sends before the
    wait it asked for is over (Mailgun limits the account, not a connection)."""

    def __init__(self) -> None:
        """No pause yet."""
        self._until = 0.0
        self._lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every request back for `seconds` from now (a longer pause already set stays)."""
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self) -> None:
        """Sleep until the current pause, if any, is over."""
        while (left := self._until - time.monotonic()) > 0:
            time.sleep(left)


class _Paging(msgspec.Struct):
    """Only the `paging` part of a listing; msgspec skips the items without building them."""

    paging: dict[str, Any] = {}


class MailgunPaginator(BaseHATEOASPaginator):
    """Follows `paging.next`; stops on a missing, empty or repeated link (empty pages stop the
    SDK's loop before we are asked), and refuses links to another host.

    A page shorter than the limit is not taken as the last: Mailgun documents the empty page
    as the end, and a listing that grows while it is read continues past a short page.
    """

    def __init__(self, origin: str) -> None:
        """`origin` is the configured API root; links elsewhere would leak the credentials."""
        super().__init__()
        self._origin = urlsplit(origin)[:2]
        self._followed: set[str] = set()

    @override
    def get_next_url(self, response: requests.Response) -> str | None:
        """The next link, or None when paging must stop."""
        link = msgspec.json.decode(response.content, type=_Paging).paging.get("next")
        if not isinstance(link, str) or not link or link in self._followed:
            return None
        if urlsplit(link)[:2] != self._origin:
            raise FatalAPIError(
                f"Mailgun answered a next-page link on another host ({urlsplit(link).netloc}); "
                "refusing to send the API key there. Check base_url."
            )
        self._followed.add(link)
        return link


class _Items(msgspec.Struct):
    """Only the items of a listing, each left undecoded: enough to count them."""

    items: list[msgspec.Raw] = []


class ShortPagePaginator(MailgunPaginator):
    """MailgunPaginator that also stops on a page shorter than the limit, where that loses
    nothing: for a listing whose bookmark never passes the listing's start (suppressions),
    an item appended after a short page was served is newer than that start, so the next
    run emits it. Saves the always-empty last page: one request per domain and listing."""

    def __init__(self, origin: str, limit: int) -> None:
        """`limit` is the page size asked."""
        super().__init__(origin)
        self._limit = limit

    @override
    def has_more(self, response: requests.Response) -> bool:
        """More pages only after a full one."""
        items = msgspec.json.decode(response.content, type=_Items).items
        return len(items) >= self._limit


class TotalPaginator(OffsetPaginator):
    """skip/limit paging until the next skip reaches the total the response states."""

    def __init__(self, page_size: int, total: Callable[[dict[str, Any]], Any]) -> None:
        """`total` reads the total from a response's body."""
        super().__init__(start_value=0, page_size=page_size)
        self._total = total

    @override
    def has_more(self, response: requests.Response) -> bool:
        """More pages while the next skip is below the total."""
        total = self._total(msgspec.json.decode(response.content)) or 0
        return bool(self.current_value + self.page_size < int(total))


def _json_object(response: requests.Response) -> dict[str, Any]:
    """The body as a JSON object; RetriableAPIError when it is not one."""
    try:
        payload = msgspec.json.decode(response.content)
    except msgspec.DecodeError as exc:
        payload = exc
    if not isinstance(payload, dict):
        start = response.content[:80].decode("utf-8", "replace")
        raise RetriableAPIError(
            f"Mailgun answered {response.status_code} for {urlsplit(response.url).path} with "
            f"a body that is not a JSON object ({start!r}...)",
            response,
        )
    return payload


class MailgunStream(
    OneLineSyncErrors, SkipMaskWhenAllSelected, IndexedPartitionState, RESTStream[ParseResult]
):
    """Base of every Mailgun stream: one place for the API's conventions."""

    one_line_errors = ONE_LINE_ERRORS

    records_key: ClassVar[str] = "items"
    page_size: ClassVar[int | None] = None  # the `limit` query parameter, when the API takes one

    def __init__(self, tap: Tap, report: RunReport | None = None) -> None:
        """A stream of `tap` reporting failed partitions to `report` (the run's, shared)."""
        super().__init__(tap)
        self.report = report or RunReport()
        self.throttle = Throttle()
        # Per thread (domains may be read several at a time): the last validated response
        # and its decoded body, so parse_response decodes nothing.
        self._decoded = threading.local()

    @property
    @override
    def url_base(self) -> str:
        """The region's API root, or `base_url`."""
        return resolve_base_url(dict(self.config))

    @cached_property
    @override
    def authenticator(self) -> BasicAuthenticator:
        """Basic auth `api:<key>`."""
        return BasicAuthenticator(username="api", password=self.config["api_key"])

    @property
    @override
    def http_headers(self) -> dict[str, str]:
        """Ask for JSON explicitly: some error pages are HTML otherwise."""
        return {"Accept": "application/json"}

    @override
    def get_new_paginator(self) -> BaseAPIPaginator[Any]:
        """Follow `paging.next` links on the configured host."""
        return MailgunPaginator(self.url_base)

    @override
    def get_url_params(
        self, context: Context | None, next_page_token: ParseResult | None
    ) -> dict[str, Any]:
        """First page only: later pages follow the link as given (it keeps the query)."""
        if isinstance(next_page_token, ParseResult):
            return {}
        return self.first_page_params(context)

    def first_page_params(self, context: Context | None) -> dict[str, Any]:
        """Query parameters of a listing's first request."""
        return {"limit": self.page_size} if self.page_size else {}

    @override
    def get_http_request(self, *, page: PageContext[ParseResult]) -> HTTPRequest:
        """Pages after the first are the server's next link, verbatim."""
        request = super().get_http_request(page=page)
        if isinstance(page.next_page_token, ParseResult):
            request.url = page.next_page_token.geturl()
        return request

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        """The listing's items, decoded with msgspec (floats stay floats: full precision)."""
        decoded = getattr(self._decoded, "last", None)
        payload = decoded[1] if decoded and decoded[0] is response else _json_object(response)
        items = payload.get(self.records_key)
        return items or []

    # --- errors -------------------------------------------------------------------------
    @override
    def validate_response(self, response: requests.Response) -> None:
        """401 stops the run, 404 on a domain fails that domain, 429/5xx are retried."""
        config = dict(self.config)
        if response.status_code == HTTPStatus.UNAUTHORIZED:
            raise MailgunAuthError(
                f"Mailgun refused the API key (401) at {where(config)}. Check api_key "
                "(MAILGUN_API_KEY) and that the key belongs to the account of this region; "
                "EU accounts need region: eu."
            )
        if response.status_code == HTTPStatus.NOT_FOUND and not _is_json(response):
            raise MailgunNoApiError(_no_api_message(response, config))
        domain = domain_of(response)
        if response.status_code == HTTPStatus.NOT_FOUND and domain:
            other = "us" if (config.get("region") or "us") == "eu" else "eu"
            raise MailgunUnknownDomainError(
                f"Mailgun has no domain {domain!r} at {where(config)}. If the domain is in "
                f"the other region, set region: {other}; otherwise check `domains` "
                "(MAILGUN_DOMAIN).",
                domain,
            )
        super().validate_response(response)
        # A 200 cut short or answered by a proxy (HTML) is retried like a 5xx, instead of
        # failing outside the retries in parse_response; decoded once, here.
        self._decoded.last = (response, _json_object(response))

    @override
    def response_error_message(self, response: requests.Response) -> str:
        """Status, path and the start of the body: enough to act on, never the credentials."""
        body = response.text[:300] if response.content else ""
        return (
            f"Mailgun answered {response.status_code} {response.reason} for "
            f"{urlsplit(response.url).path} at {where(dict(self.config))}: {body}"
        ).rstrip(": ")

    @override
    def request_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The SDK's paged requests; a partition that fails for good is reported to the run
        report: the tap syncs the other partitions and exits non-zero at the end."""
        try:
            yield from self.read_pages(context)
        except MailgunRunError:
            self.stop_reading()
            raise
        except MailgunGoneError as gone:
            self.logger.warning("%s: skipped.", gone)
        except requests.RequestException as exc:
            if never_connected(exc):
                raise MailgunUnreachableError(
                    f"Could not connect to Mailgun at {where(dict(self.config))} after "
                    f"{self.backoff_max_tries()} tries ({type(exc).__name__}). Check the "
                    "network, and base_url or region."
                ) from exc
            self._failed(
                context, RetriableAPIError(f"{type(exc).__name__} after the retries: {exc}")
            )
        except (FatalAPIError, RetriableAPIError) as exc:
            self._failed(context, exc)

    def keep_connections(self, connections: int) -> None:
        """Keep up to `connections` connections to Mailgun alive, one per thread that reads
        (requests' default pool keeps 10 and reconnects beyond)."""
        self.requests_session.mount(self.url_base, HTTPAdapter(pool_maxsize=connections))

    def stop_reading(self) -> None:
        """The run stops: threads reading ahead, if any, send nothing more."""

    def read_pages(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The items of every page of this partition: the SDK's paged requests."""
        return super().request_records(context)

    def _failed(self, context: Context | None, error: Exception) -> None:
        """Report a partition (or a stream read once) that failed for good to the run report."""
        if context:
            # An unsorted stream's progress covers only part of the partition: promoting it
            # to a bookmark would skip the unread rest next run. Sorted bookmarks stay.
            drop_progress_markers(self.get_context_state(context))
        message = self.report.report_failure(self.name, context or {}, error)
        self.logger.error("%s; the rest of the sync goes on.", message)

    @override
    def request_decorator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The SDK's retries, around a request that stops the run at once when no retry can
        mend its failure (the SDK never retries a FatalAPIError)."""

        def request(*args: Any, **kwargs: Any) -> Any:  # named so in backoff's log lines
            self.throttle.wait()
            try:
                return func(*args, **kwargs)
            except requests.RequestException as exc:
                host = unresolved_host(exc)
                if host is not None:
                    raise MailgunUnreachableError(
                        f"The Mailgun host {host} does not resolve (DNS), so nothing can be "
                        f"read from {where(dict(self.config))}: check base_url or region, and "
                        "the machine's DNS."
                    ) from None
                refused = refusal(exc)
                if refused is None:
                    raise
                raise MailgunRunError(
                    f"Could not send a request to Mailgun at {where(dict(self.config))}: "
                    f"{refused}. No retry can change that: check base_url, and that this "
                    "machine trusts the server's TLS certificate."
                ) from None

        return super().request_decorator(request)

    @property
    @override
    def timeout(self) -> int:
        """Seconds to wait for an answer: Mailgun answers in well under one; a hung request
        should be retried long before the SDK's default 5 minutes."""
        return REQUEST_TIMEOUT_SECONDS

    # --- retries ------------------------------------------------------------------------
    @override
    def backoff_max_tries(self) -> int:
        """The first try plus `max_retries` retries."""
        return int(self.config.get("max_retries", DEFAULT_MAX_RETRIES)) + 1

    @override
    def backoff_wait_generator(self) -> Generator[float, Any, None]:
        """Waits between tries (`retry_wait_seconds`). backoff sends each failure's exception
        in (after a priming None)."""
        attempt = 0
        exception = yield 0.0
        while True:
            response = getattr(exception, "response", None)
            answered = response if isinstance(response, requests.Response) else None
            wait = retry_wait_seconds(attempt, answered)
            if answered is not None and answered.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                self.throttle.pause(wait)  # the account is limited: every thread waits
            attempt += 1
            exception = yield wait

    @override
    def backoff_jitter(self, value: float) -> float:
        """Jitter is applied by `backoff_wait_generator`, which knows whether a wait was asked."""
        return value


def _is_json(response: requests.Response) -> bool:
    try:
        msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return False
    return True


def _no_api_message(response: requests.Response, config: dict[str, Any]) -> str:
    """What to change when Mailgun has no API at a path: usually /v3 in base_url."""
    path = urlsplit(response.url).path
    root = urlsplit(resolve_base_url(config)).path.rstrip("/")
    if root.rsplit("/", 1)[-1] in ("v1", "v3", "v4"):
        fix = f"remove {root} from base_url: it is the API root, e.g. https://api.mailgun.net"
    else:
        fix = "base_url must be the API root (e.g. https://api.mailgun.net), without /v3"
    return f"Mailgun has no API at {path} (404) at {where(config)}; {fix}."


def domain_of(response: requests.Response) -> str | None:
    """The domain of a /v3/{domain}/... request (lists live under /v3/lists and are no domain)."""
    parts = urlsplit(response.url).path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "v3" and parts[1] != "lists":
        return parts[1]
    return None
