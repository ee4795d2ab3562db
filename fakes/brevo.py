"""A stateful fake of Brevo's v3 API: contacts, attributes, lists, imports, processes, events.

It keeps what Brevo keeps and behaves as Brevo does where it matters to a writer:
- attributes unknown to the account, and values of the wrong type, are silently dropped; an
  attribute is created in capitals, and an import must name it so ("score" is not SCORE);
- POST /contacts/import is asynchronous: it answers a processId, and Brevo works through its
  imports one after another, each taking `import_seconds`, whether anyone asks or not; it lands
  (or fails) when its time is up, and GET /processes/{id} and GET /processes (the list, newest
  first) only report what time did: queued, processing, completed or failed;
- list add/remove take at most 150 emails; /events/batch at most 200 events and 512 KB and
  answers 202, 207 (partial) or 400 (all failed);
- every call needs the `api-key` header (401 otherwise); every answer carries
  x-sib-ratelimit-limit / -remaining / -reset for its bucket (REPORTED_LIMITS unless a test
  gives its own), and the buckets a test passes in `rate_limits` are enforced with 429s.
  As Brevo documents them: a bucket counts calls (refused ones too) in fixed windows, the
  first call after one ended opening the next; `reset` is the time the window has left in
  whole seconds, rounded up (never early, at least 1), and `remaining` what it has left.
GET /account answers for the key's account, as a connection check reads it.
GET /_fake/state (not Brevo's, not validated) returns the whole state as JSON for humans and
the sandbox's summary.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from fakes.server import FakeAPI, Recorded, json_response
from fakes.specs import BREVO_SPEC

MAX_LIST_EMAILS = 150
MAX_BATCH_EVENTS = 200
MAX_BATCH_BYTES = 512 * 1024
MAX_IMPORT_BYTES = 10 * 1024 * 1024
ATTRIBUTE_TYPES = ("text", "date", "float", "boolean")
# Brevo's documented limits (general plan); tests that exercise throttling pass these.
BREVO_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "processes": (100, 3600.0),
    "contacts": (10, 1.0),
    "events": (10, 1.0),
}
# What every answer reports when a test sets no limit: Brevo's hourly /processes bucket, and for
# contacts and events the headroom of a larger plan, so that the target's pacing (it slows down
# when few calls are left) does not slow every test; tests of pacing pass BREVO_RATE_LIMITS.
REPORTED_LIMITS: dict[str, tuple[int, float]] = {
    "processes": (100, 3600.0),
    "contacts": (100, 1.0),
    "events": (100, 1.0),
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_FINAL = ("completed", "failed")


def _error(code: str, message: str, status: int = 400) -> Response:
    return json_response({"code": code, "message": message}, status)


def _fits(kind: str, value: Any) -> bool:
    """Whether Brevo would keep `value` in an attribute of type `kind` (else it drops it)."""
    if kind == "text":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "date":
        if not isinstance(value, str):
            return False
        try:
            date.fromisoformat(value)
        except ValueError:
            return False
        return len(value) == 10
    return False


class FakeBrevo(FakeAPI):
    """The fake Brevo: state in plain dicts, served under /v3 like api.brevo.com/v3."""

    spec_name = BREVO_SPEC

    def __init__(
        self,
        *,
        api_key: str = "xkeysib-test",
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limits: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        super().__init__(validate=validate, host=host, port=port)
        self.api_key = api_key
        self._contacts: dict[str, dict[str, Any]] = {}
        self.attributes: dict[str, str] = {"FIRSTNAME": "text", "LASTNAME": "text"}
        self.folders: dict[int, str] = {1: "Your first folder"}
        self.lists: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.processes: dict[int, dict[str, Any]] = {}
        self.rate_limits = dict(rate_limits or {})
        self._windows: dict[str, tuple[float, int]] = {}
        self._next_id = {"list": 1, "process": 1, "folder": 2, "contact": 1}
        self._hold: tuple[re.Pattern[str], int] | None = None
        self.import_failures: list[str] = []  # errors the next imports end with, in order
        # How long each import takes once the ones before it are done. 0: done by the time
        # anyone looks (the target never waits for imports, and tests read the fake right after
        # a run); tests of a slow Brevo raise it.
        self.import_seconds = 0.0
        self._queue_free_at = 0.0  # when Brevo's import queue will have finished the last import
        self.held = threading.Event()  # set while a held request waits for `release`
        self._released = threading.Event()

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        """email -> contact, with every import whose time is up applied first."""
        with self.lock:
            self._complete_due()
            return self._contacts

    @contacts.setter
    def contacts(self, value: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            self._contacts = value

    # --- loading API ----------------------------------------------------------------------
    def add_list(self, name: str) -> int:
        """Create a list in the first folder; returns its id."""
        with self.lock:
            list_id = self._new_id("list")
            self.lists[list_id] = {"id": list_id, "name": name, "folderId": 1}
            return list_id

    def settle(self) -> None:
        """Complete every import still queued or processing, as Brevo would given time."""
        with self.lock:
            for process_id in sorted(self.processes):
                self._complete(self.processes[process_id])

    def hold(self, pattern: str, after: int) -> None:
        """Hold the request matching `pattern` that comes after `after` matching ones.

        It waits (setting `held`) until `release()`, then is answered 503 without effect: the
        way to kill a client while its request is in flight, e.g. between two batches.
        """
        self._hold = (re.compile(pattern), after)

    def release(self) -> None:
        """Let a held request finish (with a 503)."""
        self._released.set()

    def state(self) -> dict[str, Any]:
        """The whole state as plain JSON data (what GET /_fake/state answers)."""
        with self.lock:
            self._complete_due()
            return {
                "contacts": {
                    email: {**c, "listIds": sorted(c["listIds"])}
                    for email, c in sorted(self._contacts.items())
                },
                "attributes": dict(self.attributes),
                "lists": {str(k): v for k, v in self.lists.items()},
                "events": list(self.events),
                "processes": {str(k): self._public(v) for k, v in self.processes.items()},
            }

    # --- routes ---------------------------------------------------------------------------
    def rules(self) -> Iterable[Rule]:
        """Brevo's routes this fake serves, all under /v3."""
        return [
            Rule("/v3/account", methods=["GET"], endpoint="get_account"),
            Rule("/v3/contacts/attributes", methods=["GET"], endpoint="get_attributes"),
            Rule(
                "/v3/contacts/attributes/<category>/<name>",
                methods=["POST"],
                endpoint="create_attribute",
            ),
            Rule("/v3/contacts/import", methods=["POST"], endpoint="import_contacts"),
            Rule("/v3/processes", methods=["GET"], endpoint="get_processes"),
            Rule("/v3/processes/<int:process_id>", methods=["GET"], endpoint="get_process"),
            Rule("/v3/contacts/folders", methods=["GET"], endpoint="get_folders"),
            Rule("/v3/contacts/folders", methods=["POST"], endpoint="create_folder"),
            Rule("/v3/contacts/lists", methods=["GET"], endpoint="get_lists"),
            Rule("/v3/contacts/lists", methods=["POST"], endpoint="create_list"),
            Rule(
                "/v3/contacts/lists/<int:list_id>/contacts/<any(add, remove):action>",
                methods=["POST"],
                endpoint="change_list",
            ),
            Rule("/v3/contacts/<identifier>", methods=["GET"], endpoint="get_contact"),
            Rule("/v3/events/batch", methods=["POST"], endpoint="create_events"),
        ]

    def authenticate(self, request: Request) -> Response | None:
        """401 unless the `api-key` header holds the account's key; 429 when a bucket is empty."""
        if request.headers.get("api-key") != self.api_key:
            return _error("unauthorized", "Key not found", 401)
        bucket = self._bucket(request.path)
        limit, window = self._limits(bucket)
        with self.lock:
            remaining, reset = self._take(bucket, limit, window)
        if remaining < 0 and bucket in self.rate_limits:  # enforced only where a test asks
            headers = self._limit_headers(limit, remaining, reset)
            return json_response(
                {"code": "too_many_requests", "message": "Too many requests"}, 429, headers
            )
        return None

    def _limits(self, bucket: str) -> tuple[int, float]:
        """The bucket's (limit, window): a test's, else Brevo's own."""
        return self.rate_limits.get(bucket) or REPORTED_LIMITS[bucket]

    def _respond(self, request: Request, recorded: Recorded) -> Response:
        if request.path == "/_fake/state":  # the fake's own window: not Brevo, not validated
            return json_response(self.state())
        if self._hold is not None and self._hold[0].search(f"{request.method} {request.path}"):
            pattern, after = self._hold
            if after <= 0:
                self._hold = None
                self.held.set()
                self._released.wait(timeout=60)
                return _error("unavailable", "held by the test", 503)
            self._hold = (pattern, after - 1)
        with self.lock:
            self._complete_due()
        response = super()._respond(request, recorded)
        bucket = self._bucket(request.path)
        if "x-sib-ratelimit-limit" not in response.headers:  # Brevo sends them on every answer
            limit, window = self._limits(bucket)
            with self.lock:
                start, used = self._windows.get(f"{bucket} {limit}/{window}", (time.monotonic(), 0))
                reset = max(0.0, start + window - time.monotonic())
            response.headers.update(self._limit_headers(limit, limit - used, reset))
        return response

    # --- rate limiting --------------------------------------------------------------------
    @staticmethod
    def _bucket(path: str) -> str:
        if path.startswith("/v3/processes"):
            return "processes"
        if path.startswith("/v3/events"):
            return "events"
        return "contacts"

    def _take(self, bucket: str, limit: int, window: float) -> tuple[int, float]:
        now = time.monotonic()
        key = f"{bucket} {limit}/{window}"  # new limits set by a test: a fresh window
        start, used = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, used = now, 0
        used += 1
        self._windows[key] = (start, used)
        return limit - used, max(0.0, start + window - now)

    @staticmethod
    def _limit_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
        return {
            "x-sib-ratelimit-limit": str(limit),
            "x-sib-ratelimit-remaining": str(max(0, remaining)),
            # whole seconds, rounded up: round(x + 0.5) made a fresh 1 s window say 2
            "x-sib-ratelimit-reset": str(max(1, math.ceil(reset))),
        }

    # --- attributes -----------------------------------------------------------------------
    def get_attributes(self, request: Request) -> Response:
        """GET /contacts/attributes."""
        return json_response(
            {
                "attributes": [
                    {"name": name, "category": "normal", "type": kind}
                    for name, kind in self.attributes.items()
                ]
            }
        )

    def create_attribute(self, request: Request, category: str, name: str) -> Response:
        """POST /contacts/attributes/{category}/{name}: only normal attributes are kept here."""
        kind = (request.get_json(silent=True) or {}).get("type", "text")
        if category != "normal" or kind not in ATTRIBUTE_TYPES:
            return _error("invalid_parameter", f"unsupported attribute {category}/{kind}")
        if name.upper() in self.attributes:
            return _error("duplicate_parameter", "Attribute name must be unique")
        self.attributes[name.upper()] = kind
        return Response(status=201)

    # --- folders and lists ----------------------------------------------------------------
    def get_folders(self, request: Request) -> Response:
        """GET /contacts/folders, paged by limit/offset."""
        items = [{"id": k, "name": v} for k, v in sorted(self.folders.items())]
        return json_response(self._page(request, items, "folders"))

    def create_folder(self, request: Request) -> Response:
        """POST /contacts/folders."""
        folder_id = self._new_id("folder")
        self.folders[folder_id] = str((request.get_json() or {}).get("name", ""))
        return json_response({"id": folder_id}, 201)

    def get_account(self, request: Request) -> Response:
        """GET /account: the account the key belongs to (a free plan, as a new account has)."""
        return json_response(
            {
                "organization_id": "5fa2b8c123456789abcdef01",
                "user_id": 1234567,
                "enterprise": False,
                "companyName": "Sandbox Shop",
                "email": "owner@shop.example",
                "firstName": "Sandbox",
                "lastName": "Owner",
                "plan": [{"type": "free", "creditsType": "sendLimit", "credits": 300}],
            }
        )

    def get_lists(self, request: Request) -> Response:
        """GET /contacts/lists, paged by limit/offset."""
        items = [
            {**lst, "uniqueSubscribers": self._members(lst["id"])}
            for _, lst in sorted(self.lists.items())
        ]
        return json_response(self._page(request, items, "lists"))

    def create_list(self, request: Request) -> Response:
        """POST /contacts/lists: the folder must exist."""
        body = request.get_json() or {}
        if body.get("folderId") not in self.folders:
            return _error("invalid_parameter", "Folder id not found", 404)
        list_id = self._new_id("list")
        self.lists[list_id] = {"id": list_id, "name": body["name"], "folderId": body["folderId"]}
        return json_response({"id": list_id}, 201)

    def change_list(self, request: Request, list_id: int, action: str) -> Response:
        """POST /contacts/lists/{id}/contacts/add|remove: at most 150 existing contacts."""
        if list_id not in self.lists:
            return _error("document_not_found", "List ID does not exist", 404)
        emails = [str(e).strip().lower() for e in (request.get_json() or {}).get("emails", [])]
        if len(emails) > MAX_LIST_EMAILS:
            return _error("invalid_parameter", "You can pass a maximum of 150 emails")
        success, failure = [], []
        for email in emails:
            contact = self.contacts.get(email)
            if contact is None:
                failure.append(email)
                continue
            if action == "add":
                contact["listIds"].add(list_id)
            else:
                contact["listIds"].discard(list_id)
            success.append(email)
        if not success:
            return _error("invalid_parameter", "Contact(s) do not exist")
        return json_response({"contacts": {"success": success, "failure": failure}}, 201)

    # --- contacts and imports -------------------------------------------------------------
    def get_contact(self, request: Request, identifier: str) -> Response:
        """GET /contacts/{email}."""
        contact = self.contacts.get(identifier.lower())
        if contact is None:
            return _error("document_not_found", "Contact does not exist", 404)
        return json_response({**contact, "listIds": sorted(contact["listIds"])})

    def import_contacts(self, request: Request) -> Response:
        """POST /contacts/import: validated now, applied when its process completes."""
        if len(request.get_data()) > MAX_IMPORT_BYTES:
            return _error("invalid_parameter", "Maximum allowed json body size is 10MB")
        body = request.get_json() or {}
        if "jsonBody" not in body:
            return _error("missing_parameter", "jsonBody, fileBody or fileUrl is required")
        list_ids = body.get("listIds") or []
        if not list_ids and not body.get("newList"):
            return _error("missing_parameter", "listIds or newList is required")
        unknown = [i for i in list_ids if i not in self.lists]
        if unknown:
            return _error("invalid_parameter", f"List ids not found: {unknown}")
        process_id = self._new_id("process")
        now = time.monotonic()
        starts = max(now, self._queue_free_at)
        self._queue_free_at = starts + self.import_seconds
        self.processes[process_id] = {
            "id": process_id,
            "name": "IMPORTUSER",
            "status": "queued",
            "payload": body,
            "starts_at": starts,
            "done_at": self._queue_free_at,
        }
        return json_response({"processId": process_id}, 202)

    def get_process(self, request: Request, process_id: int) -> Response:
        """GET /processes/{id}: what time made of the process (asking never moves it)."""
        process = self.processes.get(process_id)
        if process is None:
            return _error("document_not_found", "Process does not exist", 404)
        return json_response(self._public(process))

    def get_processes(self, request: Request) -> Response:
        """GET /processes: every process, newest first unless sort=asc, paged by limit/offset."""
        order = sorted(self.processes, reverse=request.args.get("sort", "desc") != "asc")
        items = [self._public(self.processes[i]) for i in order]
        return json_response(self._page(request, items, "processes"))

    @staticmethod
    def _public(process: dict[str, Any]) -> dict[str, Any]:
        hidden = ("payload", "starts_at", "done_at")
        return {k: v for k, v in process.items() if k not in hidden}

    def _complete_due(self) -> None:
        """Bring every process up to the clock: start, complete (or fail) those due, in order."""
        now = time.monotonic()
        for process_id in sorted(self.processes):
            process = self.processes[process_id]
            if process["status"] in _FINAL:
                continue
            if now < process["starts_at"]:
                return  # Brevo's queue: nothing after it has started either
            if now < process["done_at"]:
                process["status"] = "processing"
                return
            self._complete(process)

    def _complete(self, process: dict[str, Any]) -> None:
        if process["status"] in _FINAL:
            return
        if self.import_failures:
            process.update(status="failed", error=self.import_failures.pop(0))
        else:
            invalid = self._apply_import(process["payload"])
            process.update(status="completed", info={"import": {"invalid_emails": invalid or None}})

    def _apply_import(self, body: dict[str, Any]) -> int:
        """Apply one import as Brevo does; returns the number of invalid emails."""
        update = body.get("updateExistingContacts", True)
        erase = body.get("emptyContactsAttributes", False)
        list_ids = set(body.get("listIds") or [])
        invalid = 0
        for row in body["jsonBody"]:
            email = str(row.get("email") or "").strip().lower()
            if not _EMAIL.match(email):
                invalid += 1
                continue
            contact = self._contacts.get(email)
            if contact is None:
                contact = self._contacts[email] = {
                    "id": self._new_id("contact"),
                    "email": email,
                    "attributes": {},
                    "emailBlacklisted": False,
                    "listIds": set(),
                }
            elif not update:
                continue
            for name, value in (row.get("attributes") or {}).items():
                kind = self.attributes.get(name)  # exact name: Brevo's are in capitals
                if value is None or value == "":
                    if erase:
                        contact["attributes"].pop(name, None)
                elif kind is not None and _fits(kind, value):
                    contact["attributes"][name] = value
            if body.get("emailBlacklist"):
                contact["emailBlacklisted"] = True
            contact["listIds"] |= list_ids
        return invalid

    # --- events ---------------------------------------------------------------------------
    def create_events(self, request: Request) -> Response:
        """POST /events/batch: 202 all accepted, 207 some failed, 400 all failed."""
        if len(request.get_data()) > MAX_BATCH_BYTES:
            return _error("invalid_parameter", "Batch larger than 512 KB", 413)
        events = (request.get_json() or {}).get("events", [])
        if len(events) > MAX_BATCH_EVENTS:
            return _error("invalid_parameter", "At most 200 events per batch")
        errors = []
        for index, event in enumerate(events):
            problem = self._event_problem(event)
            if problem:
                errors.append({"eventIndex": [index], "message": problem})
            else:
                self.events.append(event)
        if not errors:
            return json_response({"message": "Events accepted", "count": len(events)}, 202)
        report = {
            "status": "partial_success" if len(errors) < len(events) else "failed",
            "total_events": len(events),
            "successful_events": len(events) - len(errors),
            "failed_events": len(errors),
            "errors": errors,
        }
        return json_response(report, 207 if len(errors) < len(events) else 400)

    @staticmethod
    def _event_problem(event: dict[str, Any]) -> str | None:
        if not _EVENT_NAME.match(str(event.get("event_name", ""))):
            return "event_name must be 1-255 characters among A-Z a-z 0-9 _ -"
        email = (event.get("identifiers") or {}).get("email_id")
        if email is not None and not _EMAIL.match(str(email)):
            return f"identifiers.email_id is not a valid email: {email}"
        if "event_date" in event:
            try:
                datetime.fromisoformat(str(event["event_date"]).replace("Z", "+00:00"))
            except ValueError:
                return "event_date must be an ISO-8601 timestamp"
        if len(json.dumps(event.get("event_properties") or {})) > 50 * 1024:
            return "event_properties larger than 50 KB"
        return None

    # --- helpers --------------------------------------------------------------------------
    def _new_id(self, kind: str) -> int:
        value = self._next_id[kind]
        self._next_id[kind] += 1
        return value

    def _members(self, list_id: int) -> int:
        return sum(1 for c in self.contacts.values() if list_id in c["listIds"])

    @staticmethod
    def _page(request: Request, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        limit = int(request.args.get("limit", 10))
        offset = int(request.args.get("offset", 0))
        return {key: items[offset : offset + limit], "count": len(items)}
