"""The Brevo HTTP client: the one owner of Brevo's batch limits, rate limits and retries.

- 429: wait for `x-sib-ratelimit-reset` (capped, jittered), and pace calls when
  `x-sib-ratelimit-remaining` runs low, before Brevo has to refuse anything;
- 5xx, 425 and connection errors: retry with exponential backoff, a bounded number of times;
- 401: stop at once with a message that says which setting to check;
- batches: /contacts/import at most 8 MB, /events/batch at most 200 events and 512 KB;
  a 207 keeps what Brevo stored and names what it refused; a 400 stores nothing, so the rows
  it names are dropped and the rest is sent again.
The API key travels only in the `api-key` header and never appears in logs or errors.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import requests

K = TypeVar("K")

MAX_EVENTS = 200
MAX_EVENT_BYTES = 512 * 1024
MAX_IMPORT_BYTES = 8 * 1024 * 1024  # Brevo's recommended safe size (hard limit 10 MB)
PROCESS_PAGE = 50  # the most GET /processes lists in one call
MAX_BATCH_RESENDS = 2  # resends of an events batch after 400s naming some of its rows
RESET_CAP_SECONDS = 300.0  # never trust a reset header to park the run for longer
LOW_REMAINING_FRACTION = 0.1
# Answers after which Brevo may have acted on a request all the same (a gateway gave up, or
# the server failed midway); 503 and 425 say it did not.
UNSURE_STATUSES = frozenset({500, 502, 504})
_ENVELOPE = 64  # bytes of JSON around a batch's items, with room to spare


class BrevoError(Exception):
    """Brevo refused a request in a way the target cannot work around."""


class BrevoAuthError(BrevoError):
    """Brevo refused the API key."""


class BrevoUnsure(BrevoError):
    """A request that must not be sent twice failed in a way that leaves its effect unknown."""


def _never_sent(exc: Exception) -> bool:
    """Whether a connection error happened before the request could reach Brevo.

    requests wraps a failure to connect (refused, unresolvable, connect timeout) as urllib3's
    ConnectTimeoutError or a subclass of it, in a MaxRetryError's `reason`; a failure after
    sending (reset, read timeout) is anything else. Matched by name so that urllib3, which only
    requests depends on, need not be imported.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return any(k.__name__ == "ConnectTimeoutError" for k in type(reason).__mro__)


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dry_run = dry_run
        self.max_tries = max_tries
        self.logger = logger or logging.getLogger("target-brevo")
        self.sleep = sleep
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
        for attempt in range(1, self.max_tries + 1):
            self.stats.calls[endpoint] += 1  # every attempt is a call Brevo counts
            try:
                response = self.session.request(method, url, data=body, params=params, timeout=120)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if duplicates and not _never_sent(exc):
                    raise BrevoUnsure(
                        f"{endpoint}: {type(exc).__name__} before Brevo answered; Brevo may or "
                        "may not have stored it"
                    ) from None
                if attempt == self.max_tries:
                    raise BrevoError(
                        f"could not reach Brevo at {self.base_url} ({type(exc).__name__}); "
                        "check base_url and the network, then rerun: nothing was lost"
                    ) from None
                self._retry(endpoint, attempt, type(exc).__name__, self._backoff(attempt))
                continue
            status = response.status_code
            if status != 429:  # a 429 waits for the reset below; pacing too would wait twice
                self._pace(response)
            if status == 401:
                raise BrevoAuthError(
                    f"Brevo refused the API key at {self.base_url} (401 {_message(response)}); "
                    "check the api_key setting (BREVO_API_KEY)"
                )
            if duplicates and status in UNSURE_STATUSES:
                raise BrevoUnsure(
                    f"{endpoint} answered {status} {_message(response)}; Brevo may or may not "
                    "have stored it"
                )
            if status == 429 and attempt < self.max_tries:
                self._retry(endpoint, attempt, "429", self._reset_wait(response))
                continue
            if (status == 425 or status >= 500) and attempt < self.max_tries:
                self._retry(endpoint, attempt, str(status), self._backoff(attempt))
                continue
            if status == 429 or status == 425 or status >= 500:
                raise BrevoError(
                    f"{endpoint} still failing after {self.max_tries} tries "
                    f"({status} {_message(response)}); rerun later: nothing was lost"
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

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

    def _pace(self, response: requests.Response) -> None:
        """Spread the calls left in a rate-limit window over the time left in it."""
        remaining = self._header(response, "x-sib-ratelimit-remaining")
        limit = self._header(response, "x-sib-ratelimit-limit")
        reset = self._header(response, "x-sib-ratelimit-reset")
        if remaining is None or limit is None or reset is None:
            return
        if remaining <= max(1.0, limit * LOW_REMAINING_FRACTION):
            self.sleep(min(reset, RESET_CAP_SECONDS) / (remaining + 1))

    def _json(
        self, method: str, path: str, payload: Any, **kwargs: Any
    ) -> requests.Response | None:
        return self.request(method, path, msgspec.json.encode(payload), **kwargs)

    # --- attributes, folders, lists -------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        """Contact attributes of the account: name -> type."""
        response = self._expect(self.request("GET", "/contacts/attributes"), 200)
        return {a["name"]: a.get("type", "") for a in response.json().get("attributes", [])}

    def create_attribute(self, name: str, kind: str) -> None:
        """Create a normal contact attribute of the given type (text, float, date, boolean)."""
        response = self._json(
            "POST",
            f"/contacts/attributes/normal/{name}",
            {"type": kind},
            label="/contacts/attributes/normal/{name}",
        )
        if response is not None:  # None: dry-run
            self._expect(response, 201)

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
            page = self._expect(self.request("GET", path, params=params), 200).json()
            items = page.get(key) or []
            found.update({int(i["id"]): str(i.get("name", "")) for i in items})
            offset += len(items)
            if not items or offset >= int(page.get("count", 0)):
                return found

    def create(self, path: str, payload: dict[str, Any]) -> int | None:
        """Create a folder or a list; its id (None in dry-run)."""
        response = self._json("POST", path, payload)
        if response is None:
            return None
        return int(self._expect(response, 201).json()["id"])

    # --- contacts -------------------------------------------------------------------------
    def import_contacts(
        self, rows: Sequence[tuple[K, bytes]], list_ids: Sequence[int], blocklist: bool
    ) -> Iterator[tuple[int | None, list[K]]]:
        """Import JSON-encoded contact rows in <= 8 MB requests; yields (processId, keys)."""
        head = msgspec.json.encode(
            {
                "listIds": sorted(list_ids),
                "emailBlacklist": blocklist,
                "updateExistingContacts": True,
                "emptyContactsAttributes": False,
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
            yield int(self._expect(response, 202).json()["processId"]), keys

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
            page = self._expect(self.request("GET", "/processes", params=params), 200).json()
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
