"""Bringing Brevo up to date with the engagement store, at each point where state is emitted.

The store is the outbox: sinks only write to it. `flush` then pushes, in this order,
1. the attributes the field mapping needs (once per run, before any contact is written),
2. every dirty contact, through /contacts/import grouped by (blocklist flag, list ids); once
   Brevo accepted an import (202) its contacts are clean and the import is kept in the store as
   unconfirmed, with its contacts; a contact withheld (`rules.withheld`: validated
   undeliverable or do_not_send, and never given to Brevo) is made clean unsent and counted,
3. every pending event, through /events/batch, committing "sent" after each accepted batch;
   an event over Brevo's limits is sent with its text trimmed to fit (`fit_event`) or, when it
   cannot fit, skipped with a warning and counted, so that one event never blocks the run.
Only when `flush` returns does the target emit STATE, so state never runs ahead of what Brevo
accepted. While the target still reads its input, `send_ready_events` sends the events already
stored as fast as Brevo's pace allows without ever waiting, so that the run's waits for Brevo
overlap its own work instead of following it. Unconfirmed imports are checked sparingly, all
at once with one GET /processes (a 100-per-hour bucket), never before FIRST_CHECK_DELAY and
at growing intervals, within a budget per run, and at the next run's first flush: a completed
one is forgotten, a failed one puts its contacts back to dirty, so they are imported again
whatever STATE said.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import msgspec

from target_brevo import rules
from target_brevo.client import (
    CONTACTS_BUCKET,
    EVENTS_BUCKET,
    MAX_EVENTS,
    BrevoClient,
    BrevoError,
    fit_event,
)
from target_brevo.settings import DEFAULT_ALL_LIST_NAME, Settings
from target_brevo.summary import WARNINGS_PER_REASON

if TYPE_CHECKING:
    from collections.abc import Iterator

    from target_brevo.store import EngagementStore
    from target_brevo.summary import Summary

CONTACT_PAGE = 50_000  # dirty contacts held in memory at once (tens of MB at most)
EVENT_PAGE = 10_000
# The final flush builds the contacts' rows on the one thread that also sends the events: every
# this many contacts, and after each import, it sends the events batches Brevo's pace allows
# now, so that the contacts' CPU fills the events' waits instead of following them.
OVERLAP_EVERY = 1_000
FIRST_CHECK_DELAY = 5.0  # an import of this run is not asked about before it is this old...
MAX_CHECK_DELAY = 300.0  # ...then at doubling intervals up to this
# GET /processes calls one run may make: Brevo allows 100 an hour, a run every 15 minutes
# makes four runs an hour, and something else on the account may want a few.
MAX_PROCESS_CALLS_PER_RUN = 12

GroupKey = tuple[bool, frozenset[int], bool]  # blocklist, list ids, erases attributes
EventKey = tuple[str, str]  # a Mailgun event's id and timestamp


class Publisher:
    """Pushes what the store holds outstanding to Brevo, in batches."""

    def __init__(
        self,
        client: BrevoClient,
        store: EngagementStore,
        settings: Settings,
        summary: Summary,
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.summary = summary
        self.logger = logger
        self._all_list: int | None = None
        self._prepared = False
        self._steps: Iterator[None] | None = None
        self._submitted: set[int] = set()  # imports submitted in this run
        self._next_check: float | None = None
        self._check_delay = FIRST_CHECK_DELAY
        self.process_calls = 0

    # --- once per run ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Create missing attributes and resolve the import list, once per run."""
        while self._prepare_step():
            pass

    def prepare_ready(self) -> None:
        """Make the preparation's calls that Brevo's contacts budget allows now, never waiting
        for it: while the target reads, so that the flush does not wait for them (the bucket
        allows 10 calls a second, and a first run creates eight attributes). Not in a dry
        run, whose flush plans everything at the end, nor while nothing waits for Brevo (the
        flush then makes no call at all)."""
        if self._prepared or self.settings.dry_run or not self.store.has_outstanding():
            return
        while self.client.ready(CONTACTS_BUCKET) and self._prepare_step():
            pass

    def _prepare_step(self) -> bool:
        """Make the preparation's next call(s); whether any are left. A step that raised
        starts the preparation again at the next call."""
        if self._prepared:
            return False
        if self._steps is None:
            self._steps = self._prepare_steps()
        try:
            next(self._steps, None)
        except BaseException:
            self._steps = None
            raise
        return not self._prepared

    def _prepare_steps(self) -> Iterator[None]:
        """The preparation, paused between two calls to Brevo."""
        existing = self.client.attributes()
        for field, attribute in self.settings.field_mapping.items():
            kind = rules.FIELD_TYPES.get(field)
            if not attribute or kind is None:
                continue
            have = existing.get(attribute)
            if have is None:
                yield
                self.logger.info("Creating Brevo attribute %s (%s)", attribute, kind)
                self.client.create_attribute(attribute, kind)
            elif have != kind:
                self.logger.warning(
                    "Brevo attribute %s is %s, not %s: Brevo will drop %s values; "
                    "map %s to another attribute in field_mapping",
                    attribute, have, kind, field, field,
                )  # fmt: skip
        yield
        lists = self.client.list_ids()
        for role, list_id in self.settings.lists.items():
            if list_id not in lists:
                raise BrevoError(
                    f"list {list_id} (lists.{role}) does not exist in Brevo; "
                    "fix the lists setting or create the list"
                )
        yield from self._resolve_all_list(lists)
        self._prepared = True

    def _resolve_all_list(self, lists: dict[int, str]) -> Iterator[None]:
        """Brevo's import needs a list: lists.all, else one named DEFAULT_ALL_LIST_NAME, made
        (in the first folder, or a new one) when missing; paused between two calls."""
        wanted = self.settings.all_list
        if wanted is not None:
            if wanted not in lists:
                raise BrevoError(f"list {wanted} (lists.all) does not exist in Brevo; fix lists")
            self._all_list = wanted
            return
        for list_id, name in lists.items():
            if name == DEFAULT_ALL_LIST_NAME:
                self._all_list = list_id
                return
        yield
        folders = self.client.folder_ids()
        folder: int | None  # None: a dry run's folder, which it only plans
        if folders:
            folder = min(folders)
        else:
            yield
            folder = self.client.create("/contacts/folders", {"name": "Mailgun"})
        yield
        self.logger.info("Creating Brevo list %r for imported contacts", DEFAULT_ALL_LIST_NAME)
        self._all_list = self.client.create(
            "/contacts/lists", {"name": DEFAULT_ALL_LIST_NAME, "folderId": folder}
        )

    # --- each flush -----------------------------------------------------------------------
    def flush(self) -> None:
        """Confirm due imports, push every dirty contact (sending the events batches that may
        go meanwhile, between writes: each committed as before), then every pending event.

        The fast lane confirms none: it runs every minute, GET /processes allows 100 calls an
        hour, and the 15-minute job confirms every earlier run's imports at its first flush.
        """
        if not self.settings.fast_lane:
            self.check_imports()
        if not self.store.has_outstanding():
            return
        self.prepare()
        self._push_contacts()
        self._push_events()

    def _push_contacts(self) -> None:
        after = ""
        while page := self.store.dirty_contacts(after=after, limit=CONTACT_PAGE):
            after = page[-1].email
            before = self.store.pushed([facts.email for facts in page])
            groups: dict[GroupKey, list[tuple[str, bytes]]] = defaultdict(list)
            withheld = [
                f.email for f in page if rules.withheld(f.validation_result, f.email in before)
            ]
            if withheld:
                self.store.mark_clean(withheld)
                self.store.commit()
                self.summary.contacts_withheld += len(withheld)
            skip = set(withheld)
            for n, facts in enumerate(page):
                if n % OVERLAP_EVERY == 0:
                    self.send_ready_events()
                if facts.email in skip:
                    continue
                attributes = rules.brevo_attributes(
                    rules.contact_fields(facts), self.settings.field_mapping
                )
                # an attribute written null is one the rules unset (see contact_fields): only
                # an import that erases empty attributes takes it out of Brevo
                erase = None in attributes.values()
                row = {"email": facts.email, "attributes": attributes}
                groups[(*self._group(facts), erase)].append((facts.email, msgspec.json.encode(row)))
            for (blocklist, list_ids, erase), rows in sorted(groups.items(), key=_group_order):
                for process_id, emails in self.client.import_contacts(
                    rows, sorted(list_ids), blocklist, erase=erase
                ):
                    if process_id is not None:  # None: dry-run
                        self.store.record_import(process_id, emails)
                        self._submitted.add(process_id)
                        soonest = time.monotonic() + FIRST_CHECK_DELAY
                        self._next_check = max(self._next_check or 0.0, soonest)
                    self.store.mark_clean(emails)
                    self._count_import(emails, blocklist, list_ids, before)
                    self.store.commit()
                    self.send_ready_events()

    def _group(self, facts: rules.ContactFacts) -> tuple[bool, frozenset[int]]:
        list_ids = set(rules.list_ids(facts, self.settings.lists))
        if self._all_list is not None:
            list_ids.add(self._all_list)
        return rules.blocklisted(facts, self.settings.blocklist_on), frozenset(list_ids)

    def _count_import(
        self,
        emails: list[str],
        blocklist: bool,
        list_ids: frozenset[int],
        before: dict[str, tuple[bool, frozenset[int]]],
    ) -> None:
        """Count the import's rows, and as blocklisted or added only what Brevo did not have."""
        self.summary.contacts_upserted += len(emails)
        now: list[tuple[str, bool, frozenset[int]]] = []
        # A contact leaves a configured list only when a rule was corrected (flags otherwise
        # only turn on): e.g. the Bounced list of someone who merely unsubscribed.
        roles = frozenset(self.settings.lists.values())
        leaving: dict[int, list[str]] = defaultdict(list)
        for email in emails:
            was_blocklisted, had = before.get(email, (False, frozenset()))
            if blocklist and not was_blocklisted:
                self.summary.blocklisted += 1
            for list_id in list_ids - had:
                self.summary.added_to_list[list_id] += 1
            for list_id in (had & roles) - list_ids:
                leaving[list_id].append(email)
            # the import never unsets the blocklist flag, and neither does anything else here
            now.append((email, blocklist or was_blocklisted, list_ids | (had - roles)))
        for list_id, gone in sorted(leaving.items()):
            self.client.remove_from_list(list_id, gone)
            self.summary.removed_from_list[list_id] += len(gone)
        self.store.record_pushed(now)

    def check_imports(self) -> None:
        """Confirm the imports Brevo accepted, all with one GET /processes, when it is time.

        Imports of earlier runs are asked about at once; this run's not before
        FIRST_CHECK_DELAY, then at doubling intervals; never more than
        MAX_PROCESS_CALLS_PER_RUN calls per run. Whatever is left waits for a later check.
        """
        pending = self.store.unconfirmed_imports()
        if not pending:
            return
        now = time.monotonic()
        if self._next_check is None:  # nothing submitted or asked about yet in this run
            if all(p in self._submitted for p in pending):
                return
        elif now < self._next_check:
            return
        budget = MAX_PROCESS_CALLS_PER_RUN - self.process_calls
        if budget <= 0:
            return
        found, calls, covered = self.client.processes(set(pending), budget)
        self.process_calls += calls
        self._check_delay = min(MAX_CHECK_DELAY, self._check_delay * 2)
        self._next_check = now + self._check_delay
        for process_id in pending:
            process = found.get(process_id)
            status = process.get("status") if process is not None else None
            if status == "completed" and process is not None:
                self.store.confirm_import(process_id, completed=True)
                info = (process.get("info") or {}).get("import") or {}
                invalid = int(info.get("invalid_emails") or 0)
                if invalid:
                    self.summary.skip("email refused by Brevo's import", invalid)
            elif status in ("failed", "cancelled") or (process is None and covered):
                why = (process or {}).get("error") or (
                    status if process is not None else "no longer listed by Brevo"
                )
                count = self.store.confirm_import(process_id, completed=False)
                self.summary.imports_failed += 1
                self.logger.error(
                    "Brevo import process %d did not complete (%s): its %d contacts are "
                    "imported again, now or at the next run",
                    process_id, why, count,
                )  # fmt: skip
        self.store.commit()

    def send_ready_events(self) -> None:
        """Send stored events while Brevo's events budget has room now; never wait for it.

        Only full batches go (a part one waits for more events, or for the flush); each is
        committed sent before the next goes, as in `flush`. Contacts wait for the flush (one
        touched again later in the input would be imported twice). Not in a dry run, whose
        flush plans everything at the end.
        """
        if self.settings.dry_run:
            return
        while self.client.ready(EVENTS_BUCKET):
            page = self.store.pending_events(MAX_EVENTS)
            if len(page) < MAX_EVENTS:  # a part batch waits to be filled: calls are the cost
                return
            self.client.send_events(self._fitting(page), self._events_answered)

    def _push_events(self) -> None:
        while page := self.store.pending_events(limit=EVENT_PAGE):
            self.client.send_events(self._fitting(page), self._events_answered)

    def _fitting(self, page: list[tuple[EventKey, bytes]]) -> list[tuple[EventKey, bytes]]:
        """The page's events as Brevo will take them; those that cannot fit are marked sent
        (never to be tried again), counted and warned about, with their Mailgun event id."""
        fitting: list[tuple[EventKey, bytes]] = []
        unfit: list[EventKey] = []
        for key, payload in page:
            fit = fit_event(payload)
            if fit.payload is None:
                unfit.append(key)
                if self.summary.skip(str(fit.unfit)):
                    self.logger.warning(
                        "Skipped Mailgun event %s at %s: %s (%d bytes)",
                        key[0], key[1], fit.unfit, len(payload),
                    )  # fmt: skip
                continue
            if fit.trimmed:
                self.summary.events_trimmed += 1
                if self.summary.events_trimmed <= WARNINGS_PER_REASON:
                    self.logger.warning(
                        "Mailgun event %s at %s is over Brevo's 50 KB of event_properties: "
                        "sent with %s trimmed (listed in its 'truncated' property)",
                        key[0], key[1], ", ".join(fit.trimmed),
                    )  # fmt: skip
            fitting.append((key, fit.payload))
        if unfit:
            self.store.mark_sent(unfit)
            self.store.commit()
        return fitting

    def _events_answered(
        self,
        keys: list[tuple[str, str]],
        rejected: list[tuple[tuple[str, str], str]],
        unnamed: int,
    ) -> None:
        for key, reason in rejected:
            if self.summary.skip(f"event refused by Brevo: {reason}"):
                self.logger.warning("Brevo refused event %s at %s: %s", key[0], key[1], reason)
        if unnamed:
            self.summary.skip("event refused by Brevo without naming it", unnamed)
        self.summary.events_sent += len(keys) - len(rejected) - unnamed
        self.store.mark_sent(keys)
        self.store.commit()


def _group_order(item: tuple[GroupKey, object]) -> tuple[bool, list[int], bool]:
    return item[0][0], sorted(item[0][1]), item[0][2]
