"""The Brevo HTTP client: the one owner of Brevo's batch limits, rate limits and retries.

- every failed exchange is classified once (`classify`): surely not stored (429, 425, 503, no
  connection made), maybe stored (500, 502, 504, a timeout or a connection dropped after
  sending, an answer cut after its headers, a protocol or TLS error) or refused (401, a TLS
  certificate not trusted, a base_url requests cannot use). Not stored: retried. Maybe stored:
  retried only when a repeat is harmless (reads, imports: upserts); an events batch is not
  resent (BrevoUnsure) and a create first looks its object up by name. Refused: stop at once
  with a message that says which setting to check;
- rate limits (`Pacer`): calls go at once while Brevo's window has calls left, and when it
  has none, wait exactly until the window ends, known to the millisecond from when this run
  saw it open (Brevo's `x-sib-ratelimit-reset` is in whole seconds), so nothing is refused
  and no time is lost; a caller may ask whether a call would go now (`ready`). A 429 still
  waits for its reset (capped, jittered); other retries back off exponentially, a bounded
  number of times (not a host name DNS does not know: it stops at once, since it will not
  resolve later);
- batches: /contacts/import at most 8 MB, /events/batch at most 200 events and 512 KB;
  a 207 keeps what Brevo stored and names what it refused; a 400 stores nothing, so the rows
  it names are dropped and the rest is sent again;
- one event: `fit_event` makes it fit Brevo's limits (text properties trimmed), or says which
  limit it cannot fit.
The API key travels only in the `api-key` header and never appears in logs or errors.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple, TypeVar

import msgspec
import requests

from plugin_cli import unresolved_host
from target_brevo import rules
from target_brevo.settings import DEFAULT_BASE_URL

K = TypeVar("K")
T = TypeVar("T")

MAX_EVENTS = 200
MAX_EVENT_BYTES = 512 * 1024
MAX_EVENT_PROPERTIES_BYTES = 50 * 1024  # of an event's event_properties, as JSON
TRUNCATED = "truncated"  # the event property that names the properties trimmed to fit
MAX_IMPORT_BYTES = 8 * 1024 * 1024  # Brevo's recommended safe size (hard limit 10 MB)
PROCESS_PAGE = 50  # the most GET /processes lists in one call
MAX_BATCH_RESENDS = 2  # resends of an events batch after 400s naming some of its rows
RESET_CAP_SECONDS = 300.0  # never trust a reset header to park the run for longer
_ENVELOPE = 64  # bytes of JSON around a batch's items, with room to spare


class BrevoError(Exception):
    """Brevo refused a request in a way the target cannot work around."""


class BrevoAuthError(BrevoError):
    """Brevo refused the API key."""


class BrevoUnsure(BrevoError):
    """A request that must not be sent twice failed in a way that leaves its effect unknown."""


class Failure(Enum):
    """What a failed exchange with Brevo says about the request's effect."""

    NOT_STORED = "surely not stored"  # retry
    MAYBE_STORED = "maybe stored"  # retry only a request that is harmless to repeat
    REFUSED = "refused"  # stop: no retry can help


# Answers that say Brevo did not act on the request. After any other 5xx (500, 502, 504...)
# it may have all the same: a gateway gave up, or the server failed midway.
_NOT_STORED_STATUSES = frozenset({425, 429, 503})


MAX_LIST_EMAILS = 150  # Brevo's cap on emails per list add or remove


def classify(failure: int | requests.RequestException) -> Failure | None:
    """The class of a failed exchange: an HTTP status, or what requests raised instead.

    None for a status that is an answer for the caller to read (2xx, and 4xx other than
    401, 425 and 429). An exception is refused when retrying cannot help (a TLS certificate
    not trusted, a URL or an api-key header requests cannot send), surely not stored when no
    connection was made, and maybe stored otherwise: a timeout or reset after sending, an
    answer cut after its headers (ChunkedEncodingError), a body that cannot be decoded, a
    protocol or TLS error.
    """
    if isinstance(failure, int):
        if failure == 401:
            return Failure.REFUSED
        if failure in _NOT_STORED_STATUSES:
            return Failure.NOT_STORED
        if failure >= 500:
            return Failure.MAYBE_STORED
        return None
    if _cause(failure, ssl.SSLCertVerificationError) or isinstance(
        failure, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                  requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader,
                  requests.TooManyRedirects)
    ):  # fmt: skip
        return Failure.REFUSED
    if isinstance(failure, requests.ConnectTimeout) or _never_connected(failure):
        return Failure.NOT_STORED
    return Failure.MAYBE_STORED


def _chain(exc: BaseException) -> Iterator[object]:
    """An exception and those it wraps: requests keeps urllib3's in args and `reason`."""
    seen: list[object] = [exc]
    met: set[int] = set()
    while seen:
        current = seen.pop()
        if id(current) in met:
            continue
        met.add(id(current))
        yield current
        if isinstance(current, BaseException):
            seen.extend(a for a in current.args if isinstance(a, BaseException))
            seen.extend(x for x in (getattr(current, "reason", None), current.__cause__)
                        if isinstance(x, BaseException))  # fmt: skip


def _cause(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(exc))


def _innermost(exc: BaseException) -> str:
    """The message of the deepest exception requests wrapped: the one that says what failed."""
    *_, last = _chain(exc)
    return str(last)[:300]


def _never_connected(exc: BaseException) -> bool:
    """Whether the request failed before a connection to Brevo was made.

    requests wraps a failure to connect (refused, unresolvable, connect timeout) as urllib3's
    ConnectTimeoutError or a subclass of it (NewConnectionError), in a MaxRetryError's
    `reason`. Matched by name so that urllib3, which only requests depends on, need not be
    imported.
    """
    return any(
        k.__name__ == "ConnectTimeoutError" for link in _chain(exc) for k in type(link).__mro__
    )


@dataclass
class CallStats:
    """API calls made (or, in dry-run, planned) by endpoint, and retries."""

    calls: Counter[str] = field(default_factory=Counter)
    retries: int = 0


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    text = body.get("message") if isinstance(body, dict) else None
    return str(text or body)[:300]


def _code(response: requests.Response) -> str | None:
    """Brevo's error code (e.g. duplicate_parameter), when the body has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("code")) if isinstance(body, dict) else None


def _decoded(response: requests.Response) -> Any:
    """The JSON body of an answer Brevo gave with success; a clear error when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise BrevoError(
            f"{response.request.method} {response.request.path_url} answered "
            f"{response.status_code} with a body that is not JSON ({response.text[:80]!r}); "
            "a proxy may stand in front of base_url. Rerun: nothing was lost"
        ) from None


class Fit(NamedTuple):
    """One event as Brevo will take it: `payload` (None when it cannot fit), the properties
    trimmed to make it fit, or the limit it cannot fit (`unfit`)."""

    payload: bytes | None
    trimmed: list[str]
    unfit: str | None = None


def _properties_size(properties: dict[str, Any]) -> int:
    # Measured as Python's json writes it (ASCII escapes, spaces after separators): never
    # smaller than the compact UTF-8 the target sends, however Brevo counts its 50 KB.
    return len(json.dumps(properties))


def _cut_to(text: str, size: int) -> str:
    """The longest start of `text` that json.dumps writes in at most `size` bytes (quotes
    aside): a character takes 1 to 12 of them, so the cut is searched for, not computed."""
    low, high = 0, min(len(text), max(size, 0))  # k characters never take under k bytes
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(text[:middle])) - 2 <= size:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def fit_event(payload: bytes) -> Fit:
    """An encoded Brevo event within Brevo's limits, or why it cannot be.

    Over 50 KB of event_properties, the longest text properties are cut, each only as much as
    needed, and a `truncated` property lists them; non-text properties are never cut. An
    event whose name Brevo refuses, whose properties are still over 50 KB, or which alone is
    over 512 KB with a batch around it cannot fit.
    """
    # Fast path: even escaped (at most 6 bytes for 2 of UTF-8), this is under the limit.
    if len(payload) * 3 <= MAX_EVENT_PROPERTIES_BYTES:
        return Fit(payload, [])
    event = msgspec.json.decode(payload)
    if not rules.is_valid_event_name(event.get("event_name")):
        return Fit(None, [], "event_name Brevo does not accept (1-255 of A-Z a-z 0-9 _ -)")
    properties = event.get("event_properties") or {}
    trimmed: list[str] = []
    while (excess := _properties_size(properties) - MAX_EVENT_PROPERTIES_BYTES) > 0:
        texts = [(len(json.dumps(v)) - 2, k) for k, v in properties.items() if isinstance(v, str)]
        size, key = max((t for t in texts if t[0] > 0), default=(0, ""))
        if not size:
            return Fit(None, [], "event_properties over Brevo's 50 KB with their text trimmed")
        if key not in trimmed:  # the mark first, so that the cut makes room for it too
            trimmed.append(key)
            properties[TRUNCATED] = sorted(trimmed)
            excess = _properties_size(properties) - MAX_EVENT_PROPERTIES_BYTES
        properties[key] = _cut_to(properties[key], size - excess)
    fitted = msgspec.json.encode(event) if trimmed else payload
    if _ENVELOPE + len(fitted) + 1 > MAX_EVENT_BYTES:
        return Fit(None, [], "event over Brevo's 512 KB per batch request")
    return Fit(fitted, sorted(trimmed))


def chunk_by_size(
    items: Sequence[tuple[K, bytes]], max_items: int, max_bytes: int
) -> Iterator[list[tuple[K, bytes]]]:
    """Consecutive chunks of JSON-encoded items, each within both limits once joined in an array."""
    chunk: list[tuple[K, bytes]] = []
    size = _ENVELOPE
    for item in items:
        grow = len(item[1]) + 1
        if chunk and (len(chunk) >= max_items or size + grow > max_bytes):
            yield chunk
            chunk, size = [], _ENVELOPE
        if _ENVELOPE + grow > max_bytes:
            raise BrevoError(f"one item is {grow} bytes, over Brevo's limit of {max_bytes}")
        chunk.append(item)
        size += grow
    if chunk:
        yield chunk


def _json_array(items: Sequence[tuple[Any, bytes]]) -> bytes:
    return b"[" + b",".join(item[1] for item in items) + b"]"


def bucket_of(path: str) -> str:
    """The rate-limit bucket a path counts against: Brevo's are per API family (contacts,
    events, processes...), named by the path's first segment."""
    return path.lstrip("/").split("/", 1)[0]


class Window(NamedTuple):
    """What one answer says of its bucket's window, and when this run knows it ends."""

    remaining: float
    ends_at: float  # on the pacer's clock


class Pacer:
    """When the next call to each rate-limit bucket may go, from the answers' headers.

    Brevo counts calls per bucket in fixed windows: the first call after a window ended opens
    the next (x-sib-ratelimit-remaining = limit - 1), and x-sib-ratelimit-reset says, in whole
    seconds rounded up, how long the window has left. Calls go at once while the window has
    some left; with none left, the next waits for the window's end: the answer that opened
    the window says its length (its reset), counted from when that answer arrived (never
    before Brevo opened it); a window this run did not see open ends at its reported reset,
    which is never early either. Waiting only at zero, but to the millisecond, is the most
    a fixed window allows: the issue measured 59 s for 352 calls (floor 35.2 s) when the
    target slept at one call left and a whole rounded-up second at none.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[str, Window] = {}

    def wait_for(self, bucket: str) -> float:
        """Seconds until a call to `bucket` may go (0: now)."""
        window = self._windows.get(bucket)
        if window is None or window.remaining > 0:
            return 0.0
        return max(0.0, window.ends_at - self.clock())

    def ready(self, bucket: str) -> bool:
        """Whether a call to `bucket` would go now, without waiting."""
        return self.wait_for(bucket) == 0.0

    def observe(self, bucket: str, limit: float, remaining: float, reset: float) -> None:
        """An answer arrived (now) with these x-sib-ratelimit-* values."""
        now = self.clock()
        reset = min(max(reset, 0.0), RESET_CAP_SECONDS)
        known = self._windows.get(bucket)
        if remaining >= limit - 1:  # this call opened the window: it ends `reset` from now
            ends_at = now + reset
        elif known is not None and known.ends_at > now and remaining < known.remaining:
            ends_at = known.ends_at  # the same window as before: its end is known better
        else:
            ends_at = now + reset
        self._windows[bucket] = Window(remaining, ends_at)

    def forget(self, bucket: str) -> None:
        """Nothing is known of the bucket's window any more (a 429 waits for its own reset)."""
        self._windows.pop(bucket, None)


EVENTS_BUCKET = bucket_of("/events/batch")
CONTACTS_BUCKET = bucket_of("/contacts")


class BrevoClient:
    """Calls to Brevo's v3 API, with the limits and retry rules above."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        dry_run: bool = False,
        max_tries: int = 6,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dry_run = dry_run
        self.max_tries = max_tries
        self.logger = logger or logging.getLogger("target-brevo")
        self.sleep = sleep
        self.pacer = Pacer(clock)
        self.stats = CallStats()
        self.session = requests.Session()
        self.session.headers.update(
            {"api-key": api_key, "accept": "application/json", "content-type": "application/json"}
        )

    # --- the one request path -------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        label: str | None = None,
        params: dict[str, Any] | None = None,
        duplicates: bool = False,
    ) -> requests.Response | None:
        """Send one request with retries; None in dry-run for anything that would write.

        `duplicates`: sending it twice would store it twice (POST /events/batch has no
        idempotency key). Such a request is retried only when Brevo surely did not act on it
        (429, 425, 503, no connection made); after an answer that leaves it unknown (a read
        timeout, a dropped connection, 500, 502, 504) it is not resent here: BrevoUnsure says
        so, and the caller leaves its rows for the next run.
        """
        endpoint = f"{method} {label or path}"
        if self.dry_run and method != "GET":
            self.stats.calls[endpoint] += 1  # planned
            preview = (body or b"")[:500].decode(errors="replace")
            self.logger.info("dry-run: would %s %s%s %s", method, self.base_url, path, preview)
            return None
        url = self.base_url + path
        bucket = bucket_of(path)
        for attempt in range(1, self.max_tries + 1):
            wait = self.pacer.wait_for(bucket)
            if wait > 0:
                self.sleep(wait)
            self.stats.calls[endpoint] += 1  # every attempt is a call Brevo counts
            try:
                response = self.session.request(method, url, data=body, params=params, timeout=120)
            except requests.RequestException as exc:
                host = unresolved_host(exc)
                if host is not None:
                    raise BrevoError(
                        f"the Brevo host {host} does not resolve (DNS): check base_url "
                        f"({self.base_url}) and the machine's DNS, then rerun: nothing was lost"
                    ) from None
                failure = classify(exc)
                why = (
                    f"could not be sent ({_innermost(exc)})"
                    if failure is Failure.REFUSED
                    else f"got {type(exc).__name__} before Brevo's answer was complete"
                )
                self._failed(endpoint, attempt, failure, why, duplicates, answered=False)
                self._retry(endpoint, attempt, type(exc).__name__, self._backoff(attempt))
                continue
            status = response.status_code
            if status != 429:
                self._pace(bucket, response)
            else:  # a 429 waits for its reset below; the pacer too would wait twice
                self.pacer.forget(bucket)
            failure = classify(status)
            if failure is None:
                return response
            if status == 401:
                raise BrevoAuthError(
                    f"Brevo refused the API key at {self.base_url} (401 {_message(response)}); "
                    "check the api_key setting (BREVO_API_KEY)"
                )
            why = f"answered {status} {_message(response)}"
            self._failed(endpoint, attempt, failure, why, duplicates, answered=True)
            wait = self._reset_wait(response) if status == 429 else self._backoff(attempt)
            self._retry(endpoint, attempt, str(status), wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(
        self,
        endpoint: str,
        attempt: int,
        failure: Failure | None,
        why: str,
        duplicates: bool,
        *,
        answered: bool,
    ) -> None:
        """Raise what a failed attempt calls for; return when it may be retried."""
        if failure is Failure.REFUSED:
            raise BrevoError(
                f"{endpoint} {why} at {self.base_url}, which no retry can change: check "
                "base_url and the TLS certificates this machine trusts, then rerun"
            )
        if duplicates and failure is Failure.MAYBE_STORED:
            raise BrevoUnsure(f"{endpoint} {why}; Brevo may or may not have stored it")
        if attempt < self.max_tries:
            return
        if answered:
            raise BrevoError(
                f"{endpoint} still failing after {self.max_tries} tries ({why}); "
                "rerun later: nothing was lost"
            )
        raise BrevoError(
            f"could not reach Brevo at {self.base_url} ({endpoint} {why}, {self.max_tries} "
            "tries); check base_url and the network, then rerun: nothing was lost"
        )

    def _retry(self, endpoint: str, attempt: int, why: str, wait: float) -> None:
        self.stats.retries += 1
        self.logger.warning(
            "%s answered %s; retry %d of %d in %.1fs",
            endpoint,
            why,
            attempt,
            self.max_tries - 1,
            wait,
        )
        self.sleep(wait)

    @staticmethod
    def _backoff(attempt: int) -> float:
        base: float = min(30.0, 0.5 * 2.0 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)

    @staticmethod
    def _header(response: requests.Response, name: str) -> float | None:
        try:
            return float(str(response.headers[name]))
        except (KeyError, ValueError):
            return None

    def _reset_wait(self, response: requests.Response) -> float:
        reset = self._header(response, "x-sib-ratelimit-reset")
        wait = 1.0 if reset is None else min(max(reset, 0.0), RESET_CAP_SECONDS)
        return wait + random.uniform(0.0, 0.25)

    def _pace(self, bucket: str, response: requests.Response) -> None:
        """Tell the pacer what the answer says of its bucket's window."""
        remaining = self._header(response, "x-sib-ratelimit-remaining")
        limit = self._header(response, "x-sib-ratelimit-limit")
        reset = self._header(response, "x-sib-ratelimit-reset")
        if remaining is not None and limit is not None and reset is not None:
            self.pacer.observe(bucket, limit, remaining, reset)

    def ready(self, bucket: str) -> bool:
        """Whether a call to `bucket` (EVENTS_BUCKET, CONTACTS_BUCKET...) would go now,
        without waiting for Brevo's pace."""
        return self.pacer.ready(bucket)

    def _json(
        self, method: str, path: str, payload: Any, **kwargs: Any
    ) -> requests.Response | None:
        return self.request(method, path, msgspec.json.encode(payload), **kwargs)

    def account(self) -> dict[str, Any]:
        """The account the key belongs to (GET /account): proof that Brevo accepts the key."""
        return dict(self._expect(self.request("GET", "/account"), 200).json())

    # --- attributes, folders, lists -------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        """Contact attributes of the account: name -> type."""
        response = self.request("GET", "/contacts/attributes")
        if response is not None and response.status_code == 404:
            # The first call of a run, to a path every account has: base_url is wrong.
            raise BrevoError(
                f"Brevo has no API at {response.request.path_url} (404): base_url "
                f"({self.base_url}) must be Brevo's API root, with /v3 once, "
                f"e.g. {DEFAULT_BASE_URL}"
            )
        response = self._expect(response, 200)
        return {a["name"]: a.get("type", "") for a in _decoded(response).get("attributes", [])}

    def create_attribute(self, name: str, kind: str) -> None:
        """Create a normal contact attribute of the given type (text, float, date, boolean)."""
        self._create_once(
            f"/contacts/attributes/normal/{name}",
            {"type": kind},
            find=lambda: True if name in self.attributes() else None,
            created=lambda response: True,
            label="/contacts/attributes/normal/{name}",
        )

    def list_ids(self) -> dict[int, str]:
        """Every contact list of the account: id -> name."""
        return self._paged("/contacts/lists", "lists")

    def folder_ids(self) -> dict[int, str]:
        """Every contact folder of the account: id -> name."""
        return self._paged("/contacts/folders", "folders")

    def _paged(self, path: str, key: str) -> dict[int, str]:
        found: dict[int, str] = {}
        offset = 0
        while True:
            params = {"limit": 50, "offset": offset}
            page = _decoded(self._expect(self.request("GET", path, params=params), 200))
            items = page.get(key) or []
            found.update({int(i["id"]): str(i.get("name", "")) for i in items})
            offset += len(items)
            if not items or offset >= int(page.get("count", 0)):
                return found

    def create(self, path: str, payload: dict[str, Any]) -> int | None:
        """Create a folder or a list named `payload["name"]`; its id (None in dry-run).

        Brevo does not refuse a second list of the same name, so a create is never sent twice
        blindly: when its answer was lost, or Brevo says it is a duplicate, the object is
        looked up by name in the listing of `path` (the oldest, if there are several).
        """
        name = payload["name"]

        def find() -> int | None:
            same = [i for i, n in self._paged(path, path.rsplit("/", 1)[-1]).items() if n == name]
            return min(same, default=None)

        return self._create_once(
            path, payload, find=find, created=lambda response: int(_decoded(response)["id"])
        )

    def _create_once(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        find: Callable[[], T | None],
        created: Callable[[requests.Response], T],
        label: str | None = None,
    ) -> T | None:
        """POST a create so that it takes effect once: what `created` makes of a 201, or what
        `find` finds when the answer was lost or was a duplicate; None in dry-run.

        A create whose answer was lost may have been carried out: `find` looks first, and only
        when the object is not there is the create sent again (at most max_tries in all).
        """
        endpoint = f"POST {label or path}"
        for attempt in range(1, self.max_tries + 1):
            try:
                response = self._json("POST", path, payload, label=label, duplicates=True)
            except BrevoUnsure as exc:
                found = find()
                if found is not None:
                    self.logger.info("%s: the answer was lost, but Brevo has it", endpoint)
                    return found
                if attempt == self.max_tries:
                    raise BrevoError(f"{exc}, and it was not there; rerun later") from None
                self._retry(
                    endpoint, attempt, "nothing readable (nor is it there)", self._backoff(attempt)
                )
                continue
            if response is None:
                return None
            if response.status_code == 400 and _code(response) == "duplicate_parameter":
                found = find()
                if found is not None:
                    return found
            return created(self._expect(response, 201))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- contacts -------------------------------------------------------------------------
    def remove_from_list(self, list_id: int, emails: Sequence[str]) -> None:
        """Take these contacts out of a list, at most MAX_LIST_EMAILS per request (Brevo's cap).

        Brevo answers 400 when none of a request's contacts exists: nothing to take out.
        """
        path = f"/contacts/lists/{list_id}/contacts/remove"
        for start in range(0, len(emails), MAX_LIST_EMAILS):
            chunk = list(emails[start : start + MAX_LIST_EMAILS])
            response = self._json(
                "POST", path, {"emails": chunk}, label="/contacts/lists/{id}/contacts/remove"
            )
            if response is None or response.status_code == 400:
                continue
            self._expect(response, 201)

    def import_contacts(
        self,
        rows: Sequence[tuple[K, bytes]],
        list_ids: Sequence[int],
        blocklist: bool,
        *,
        erase: bool = False,
    ) -> Iterator[tuple[int | None, list[K]]]:
        """Import JSON-encoded contact rows in <= 8 MB requests; yields (processId, keys).

        `erase`: attributes the rows give as null are emptied in Brevo (others stay untouched).
        """
        head = msgspec.json.encode(
            {
                "listIds": sorted(list_ids),
                "emailBlacklist": blocklist,
                "updateExistingContacts": True,
                "emptyContactsAttributes": erase,
                "disableNotification": True,
            }
        )
        for chunk in chunk_by_size(rows, len(rows) or 1, MAX_IMPORT_BYTES - len(head)):
            body = head[:-1] + b',"jsonBody":' + _json_array(chunk) + b"}"
            response = self.request("POST", "/contacts/import", body)
            keys = [key for key, _ in chunk]
            if response is None:
                yield None, keys
                continue
            yield int(_decoded(self._expect(response, 202))["processId"]), keys

    def processes(
        self, wanted: Collection[int], max_pages: int
    ) -> tuple[dict[int, dict[str, Any]], int, bool]:
        """The state of the `wanted` background processes, read from GET /processes.

        One listing call answers for up to 50 processes, newest first, where polling each
        GET /processes/{id} would spend one call of the 100-per-hour bucket per process. Pages
        are read until every wanted id was seen, the listing is past the oldest of them, or
        `max_pages` calls were made. Returns (id -> process for those seen, calls made, whether
        the listing covered every wanted id: if so, one not seen is one Brevo no longer lists).
        """
        found: dict[int, dict[str, Any]] = {}
        oldest = min(wanted, default=0)
        calls = 0
        while calls < max_pages and len(found) < len(wanted):
            params = {"limit": PROCESS_PAGE, "offset": calls * PROCESS_PAGE, "sort": "desc"}
            page = _decoded(self._expect(self.request("GET", "/processes", params=params), 200))
            calls += 1
            items = [p for p in page.get("processes") or [] if isinstance(p.get("id"), int)]
            found.update({p["id"]: p for p in items if p["id"] in wanted})
            if len(items) < PROCESS_PAGE or min(p["id"] for p in items) <= oldest:
                return found, calls, True
        return found, calls, len(found) == len(wanted)

    # --- events ---------------------------------------------------------------------------
    def send_events(
        self,
        items: Sequence[tuple[K, bytes]],
        on_batch: Callable[[list[K], list[tuple[K, str]], int], None],
    ) -> None:
        """Send JSON-encoded events in batches within Brevo's limits.

        After each batch Brevo settled, `on_batch(done, refused, unnamed)` gets the keys that
        must never be sent again (accepted or refused for good), the (key, reason) of those
        Brevo refused, and how many refusals a 207 counted without naming them.
        """
        for chunk in chunk_by_size(items, MAX_EVENTS, MAX_EVENT_BYTES):
            self._send_batch(chunk, on_batch)

    def _send_batch(
        self,
        chunk: list[tuple[K, bytes]],
        on_batch: Callable[[list[K], list[tuple[K, str]], int], None],
    ) -> None:
        """One batch: a 400 stores none of it, so drop the rows it names and send the rest.

        Brevo answers 202 (all stored), 207 (the rows it names failed, the others are stored)
        or 400 (nothing stored; the rows it names are the reason). The rest is resent, at most
        MAX_BATCH_RESENDS times; a 400 naming no row, or one more 400 after those resends, is
        an error the run stops on, with the rest left pending.
        """
        refused: list[tuple[K, str]] = []
        done: list[K] = []
        resends = 0
        while chunk:
            keys = [key for key, _ in chunk]
            body = b'{"events":' + _json_array(chunk) + b"}"
            try:
                response = self.request("POST", "/events/batch", body, duplicates=True)
            except BrevoUnsure as exc:
                if done:  # rows settled by an earlier answer to this batch stay settled
                    on_batch(done, refused, 0)
                raise BrevoError(
                    f"{exc}. Not resent now, since Brevo has no idempotency key and a resend "
                    f"could store the {len(chunk)} events twice: they stay pending and go with "
                    "the next run, which may then give Brevo a second copy of them"
                ) from None
            if response is None or response.status_code == 202:
                on_batch(done + keys, refused, 0)
                return
            named = self._rejected_rows(response, keys)
            if response.status_code == 207:
                unnamed = self._unnamed_failures(response, len(named or []))
                on_batch(done + keys, refused + (named or []), unnamed)
                return
            if response.status_code == 400 and named and resends == MAX_BATCH_RESENDS:
                on_batch(done, refused, 0)
                raise BrevoError(
                    f"POST /events/batch answered 400 naming other events after {resends} "
                    f"resends of the rest ({_message(response)}); the {len(chunk)} events "
                    "left stay pending for the next run. If this repeats, please report it"
                )
            if response.status_code != 400 or not named:
                if done:  # rows settled by an earlier answer to this batch stay settled
                    on_batch(done, refused, 0)
                raise BrevoError(
                    f"POST /events/batch answered {response.status_code} "
                    f"{_message(response)} without naming the events it refused; "
                    "none of the batch is marked sent, so the next run sends it again. "
                    "If this repeats, please report it"
                )
            refused.extend(named)
            dropped = {key for key, _ in named}
            done.extend(dropped)
            chunk = [item for item in chunk if item[0] not in dropped]
            resends += 1
            if chunk:
                self.logger.info(
                    "Brevo refused the whole batch for %d of its events; resending the other %d",
                    len(dropped),
                    len(chunk),
                )
        on_batch(done, refused, 0)

    def _unnamed_failures(self, response: requests.Response, named: int) -> int:
        """How many of a 207's failed_events it did not name (they cannot be told apart)."""
        try:
            failed = response.json().get("failed_events")
        except (ValueError, AttributeError):
            failed = None
        if not isinstance(failed, int) or failed <= named:
            return 0
        self.logger.warning(
            "Brevo reported %d failed events but named %d; the other %d cannot be told from the "
            "stored ones, so they are counted as refused and not resent",
            failed,
            named,
            failed - named,
        )
        return failed - named

    @staticmethod
    def _rejected_rows(response: requests.Response, keys: list[K]) -> list[tuple[K, str]] | None:
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            return None
        if not isinstance(errors, list) or not errors:
            return None
        rejected: dict[int, tuple[K, str]] = {}
        for error in errors:
            if not isinstance(error, dict):
                continue
            for index in error.get("eventIndex") or []:
                if isinstance(index, int) and 0 <= index < len(keys):
                    rejected.setdefault(index, (keys[index], str(error.get("message", "refused"))))
        return list(rejected.values()) or None

    def _expect(self, response: requests.Response | None, status: int) -> requests.Response:
        if response is None:
            raise BrevoError("internal: a read was skipped in dry-run")
        if response.status_code != status:
            raise BrevoError(
                f"{response.request.method} {response.request.path_url} answered "
                f"{response.status_code} {_message(response)}"
            )
        return response
