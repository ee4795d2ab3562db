"""`tap-mailgun-webhooks register`: the receiver's URL on every domain's webhooks, idempotently.

Per domain, with Mailgun's domain webhooks API:
1. GET /v3/domains/{domain}/webhooks: the URLs of each event type;
2. `plan` (pure): which of the event types the pipeline uses (`EVENT_TYPES`) lack the URL;
3. one POST /v4/domains/{domain}/webhooks with the URL and those event types: it adds the URL
   beside each type's other URLs. (v3's PUT replaces a type's whole list, a read-modify-write
   that could drop a URL someone adds meanwhile; v3's POST only creates a type that has none.)
A domain that already has the URL everywhere costs one GET and is left alone.

Why per domain rather than account-wide: the Mailgun API description this project carries
(specs/mailgun-openapi.yaml, which the fake checks every request against) documents webhooks
per domain only, so nothing here relies on an account-level endpoint. A domain added later
needs `register` again (it is idempotent: run it after adding domains, or on a schedule).

Mailgun takes at most 3 URLs per event type: a type that already has 3 others is left alone
and reported, and the command exits 1. Domains come from GET /v4/domains (skip/limit, 1000 a
page; thousands of domains are fine) unless `--domain` names them; disabled ones are skipped.

Retries: 429, 5xx and connection errors, with the tap's waits (`retry_wait_seconds`, which
honours Retry-After). A POST whose answer is lost (5xx, cut connection) may have been carried
out, so it is never repeated blindly: the domain is read again and only what is still missing
is posted. The API key is sent only as basic auth and never logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from plugin_cli import SettingError, secret
from tap_mailgun.client import (
    DEFAULT_MAX_RETRIES,
    REQUEST_TIMEOUT_SECONDS,
    resolve_base_url,
    retry_wait_seconds,
    where,
)

# What target-brevo consumes: failures (hard and soft bounces), complaints, unsubscribes and
# engagement. Mailgun's `accepted` changes nothing in Brevo, so it is not registered.
EVENT_TYPES = (
    "permanent_fail",
    "temporary_fail",
    "complained",
    "unsubscribed",
    "delivered",
    "opened",
    "clicked",
)
MAX_URLS_PER_EVENT_TYPE = 3
DOMAINS_PAGE_SIZE = 1000
API_KEY_ENV = "MAILGUN_API_KEY"
REGION_ENV = "MAILGUN_REGION"
BASE_URL_ENV = "MAILGUN_BASE_URL"

logger = logging.getLogger("mailgun_webhooks.register")


class RegisterError(Exception):
    """Nothing more can be registered (key refused, API unreachable): one line for the user."""


class DomainError(Exception):
    """This domain could not be brought up to date; the others go on."""


class _MaybeDone(Exception):
    """A write whose answer was lost: Mailgun may or may not have made the change."""


@dataclass(frozen=True)
class Plan:
    """What one domain needs: event types to add the URL to, and those at Mailgun's limit."""

    add: tuple[str, ...]
    full: tuple[str, ...]


def registered_urls(listing: dict[str, Any]) -> dict[str, list[str]]:
    """Event type -> URLs, from a GET /v3/domains/{domain}/webhooks answer (`urls`, or the
    single `url` of older answers; a type without webhooks may be missing or null)."""
    hooks = listing.get("webhooks") or {}
    found: dict[str, list[str]] = {}
    for kind, value in hooks.items():
        if not isinstance(value, dict):
            continue
        urls = value.get("urls")
        if urls is None and isinstance(value.get("url"), str):
            urls = [value["url"]]
        found[kind] = [u for u in urls or [] if isinstance(u, str)]
    return found


def plan(
    registered: dict[str, list[str]], url: str, event_types: Sequence[str] = EVENT_TYPES
) -> Plan:
    """The event types lacking `url` that can take it, and those full with other URLs."""
    lacking = [kind for kind in event_types if url not in registered.get(kind, [])]
    full = tuple(k for k in lacking if len(registered.get(k, [])) >= MAX_URLS_PER_EVENT_TYPE)
    return Plan(add=tuple(k for k in lacking if k not in full), full=full)


@dataclass
class DomainResult:
    """What happened to one domain."""

    domain: str
    plan: Plan | None = None
    error: str | None = None
    dry_run: bool = False

    @property
    def complete(self) -> bool:
        """Whether the domain has (or, in a dry run, would have) the URL for every type."""
        return self.error is None and self.plan is not None and not self.plan.full

    def line(self, url: str) -> str:
        """One line for the user."""
        if self.error is not None or self.plan is None:
            return f"{self.domain}: failed: {self.error}"
        parts = []
        if self.plan.add:
            verb = "would add" if self.dry_run else "added"
            parts.append(f"{verb} {url} for {', '.join(self.plan.add)}")
        if self.plan.full:
            have = "has" if len(self.plan.full) == 1 else "have"
            parts.append(
                f"{', '.join(self.plan.full)} already {have} {MAX_URLS_PER_EVENT_TYPE} other "
                "URLs (Mailgun's limit): remove one (Sending > Webhooks) and run register again"
            )
        return f"{self.domain}: {'; '.join(parts) or 'already registered'}"


@dataclass
class MailgunWebhooksAPI:
    """The few Mailgun calls `register` makes, with retries; one HTTP session per thread."""

    base_url: str
    api_key: str = field(repr=False)
    where: str
    max_retries: int = DEFAULT_MAX_RETRIES
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = ("api", self.api_key)
            session.headers["Accept"] = "application/json"
            self._local.session = session
        return session

    def domains(self) -> Iterator[dict[str, Any]]:
        """Every domain of the account, page by page (skip/limit, up to `total_count`)."""
        skip = 0
        while True:
            params = {"limit": DOMAINS_PAGE_SIZE, "skip": skip}
            body = self._json(self._request("GET", "/v4/domains", params=params))
            items = body.get("items") or []
            yield from items
            skip += len(items)
            if not items or skip >= int(body.get("total_count") or 0):
                return

    def registered(self, domain: str) -> dict[str, list[str]]:
        """The domain's webhook URLs per event type."""
        return registered_urls(self._json(self._request("GET", f"/v3/domains/{domain}/webhooks")))

    def add(self, domain: str, url: str, event_types: Sequence[str]) -> None:
        """Add `url` to each of `event_types` (one POST; never retried once it may have
        reached Mailgun: `_MaybeDone` then, and the caller reads the domain again)."""
        data = {"url": url, "event_types": list(event_types)}
        self._request("POST", f"/v4/domains/{domain}/webhooks", data=data, write=True)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        write: bool = False,
    ) -> requests.Response:
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._session().request(
                    method,
                    self.base_url + path,
                    params=params,
                    data=data,
                    timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except requests.ConnectionError as exc:
                if write:
                    raise _MaybeDone(f"{method} {path}: {type(exc).__name__}") from None
                if last:
                    raise RegisterError(
                        f"could not connect to Mailgun at {self.where} after "
                        f"{self.max_retries + 1} tries ({type(exc).__name__}); check the "
                        "network, and --region or --base-url"
                    ) from None
                time.sleep(retry_wait_seconds(attempt, None))
                continue
            except requests.RequestException as exc:  # a timeout or a cut answer
                if write:
                    raise _MaybeDone(f"{method} {path}: {type(exc).__name__}") from None
                if last:
                    raise DomainError(f"{method} {path}: {type(exc).__name__}") from None
                time.sleep(retry_wait_seconds(attempt, None))
                continue
            status = response.status_code
            if status == 401:
                raise RegisterError(
                    f"Mailgun refused the API key (401) at {self.where}; check "
                    f"{API_KEY_ENV} (or --api-key-file) and the region: EU accounts need "
                    "--region eu"
                )
            if status == 429 or status >= 500:
                if status >= 500 and write:
                    raise _MaybeDone(f"{method} {path}: {status}")
                if last:
                    raise DomainError(f"Mailgun answered {status} {self.max_retries + 1} times")
                time.sleep(retry_wait_seconds(attempt, response))
                continue
            if status >= 400:
                raise DomainError(f"Mailgun answered {status} for {path}: {_reason(response)}")
            return response
        raise AssertionError("unreachable: the last try returns or raises")

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise DomainError(
                f"Mailgun answered a body that is not a JSON object for {response.url}"
            )
        return body


def _reason(response: requests.Response) -> str:
    """Mailgun's own words for an error: `message`, `Reason` or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("message", "Reason", "Description"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text[:200]


def register_domain(
    api: MailgunWebhooksAPI, domain: str, url: str, *, dry_run: bool
) -> DomainResult:
    """Bring one domain's webhooks up to date (or say what that would take)."""
    try:
        first = plan(api.registered(domain), url)
        if dry_run or not first.add:
            return DomainResult(domain, first, dry_run=dry_run)
        current = first
        for _ in range(api.max_retries + 1):
            refused: DomainError | None = None
            try:
                api.add(domain, url, current.add)
                return DomainResult(domain, first)
            except _MaybeDone as exc:
                logger.info("%s: %s; reading its webhooks again", domain, exc)
            except DomainError as exc:  # e.g. 400 "already exists": raced with another change
                refused = exc
            # Post again only what is still missing: the lost POST may have been made.
            again = plan(api.registered(domain), url)
            if not again.add:
                return DomainResult(domain, Plan(first.add, again.full))
            if refused is not None and again == current:
                raise refused
            current = again
        return DomainResult(domain, error="Mailgun did not take the webhooks; run register again")
    except DomainError as exc:
        return DomainResult(domain, error=str(exc))


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-mailgun-webhooks register",
        description="Register the receiver's public URL as the webhook of every event type the "
        f"pipeline uses ({', '.join(EVENT_TYPES)}) on every domain of the Mailgun account. "
        "Idempotent: a URL already there is left alone; other URLs are kept.",
    )
    parser.add_argument("--url", required=True, help="the receiver's public HTTPS URL")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what it would do; change nothing"
    )
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        help="only this domain (repeatable; default: every domain of the account)",
    )
    parser.add_argument(
        "--region",
        choices=["us", "eu"],
        default=os.environ.get(REGION_ENV) or "us",
        help=f"where the account is: us (api.mailgun.net) or eu (default: ${REGION_ENV} or us)",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get(BASE_URL_ENV) or None,
        help=f"API root overriding --region (default: ${BASE_URL_ENV})",
    )
    parser.add_argument(
        "--api-key-file", type=Path, help=f"file holding the API key (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    parser.add_argument("--workers", type=int, default=4, help="domains handled at once")
    return parser.parse_args(argv)


def _api_key(args: argparse.Namespace) -> str:
    try:
        key = secret(args.api_key_file, API_KEY_ENV, "--api-key-file")
    except SettingError as exc:
        raise RegisterError(str(exc)) from None
    if not key:
        raise RegisterError(
            f"no API key: set {API_KEY_ENV} (Mailgun: API Security > private API key) or pass "
            "--api-key-file"
        )
    return key


def _check(args: argparse.Namespace) -> None:
    parts = urlsplit(args.url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise RegisterError(
            f"--url {args.url!r} is not an http(s) URL; give the receiver's public URL, e.g. "
            "https://hooks.example.com/webhooks/mailgun"
        )
    if parts.scheme == "http":
        logger.warning("--url is plain http: Mailgun's calls would travel unencrypted")
    if args.workers < 1 or args.max_retries < 0:
        raise RegisterError("--workers must be at least 1 and --max-retries at least 0")


def _domains(api: MailgunWebhooksAPI, named: list[str]) -> list[str]:
    if named:
        return [d.strip() for item in named for d in item.split(",") if d.strip()]
    found = list(api.domains())
    disabled = {d["name"] for d in found if d.get("is_disabled") or d.get("state") == "disabled"}
    if disabled:
        logger.info("skipping %d disabled domain(s)", len(disabled))
    return [d["name"] for d in found if d["name"] not in disabled]


def run(argv: Sequence[str]) -> int:
    """The `register` subcommand; returns the exit code (1 when a domain is left incomplete)."""
    args = _arguments(argv)
    _check(args)
    config = {"region": args.region, "base_url": args.base_url}
    api = MailgunWebhooksAPI(
        resolve_base_url(config), _api_key(args), where(config), args.max_retries
    )
    domains = _domains(api, args.domain)
    incomplete = 0
    executor = ThreadPoolExecutor(max_workers=args.workers)
    try:
        results = executor.map(
            lambda d: register_domain(api, d, args.url, dry_run=args.dry_run), domains
        )
        for result in results:
            print(result.line(args.url), flush=True)
            incomplete += not result.complete
    finally:
        executor.shutdown(cancel_futures=True)
    verb = "checked (dry run)" if args.dry_run else "up to date"
    print(
        f"register: {len(domains) - incomplete} of {len(domains)} domain(s) {verb}"
        + (f"; {incomplete} incomplete (see above)" if incomplete else ""),
        flush=True,
    )
    return 1 if incomplete else 0
