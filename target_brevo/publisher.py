"""Bringing Brevo up to date with the engagement store, at each point where state is emitted.

The store is the outbox: sinks only write to it. `flush` then pushes, in this order,
1. the attributes the field mapping needs (once per run, before any contact is written),
2. every dirty contact, through /contacts/import grouped by (blocklist flag, list ids), waiting
   for each import process to complete before marking its contacts clean,
3. every pending event, through /events/batch, committing "sent" after each accepted batch.
Only when `flush` returns does the target emit STATE, so state never runs ahead of Brevo.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from target_brevo import rules
from target_brevo.client import BrevoClient, BrevoError
from target_brevo.settings import DEFAULT_ALL_LIST_NAME, Settings

if TYPE_CHECKING:
    from target_brevo.store import EngagementStore
    from target_brevo.summary import Summary

CONTACT_PAGE = 50_000  # dirty contacts held in memory at once (tens of MB at most)
EVENT_PAGE = 10_000
FIRST_POLL_DELAY = 0.5  # small imports are done by then: usually one poll per import
MAX_POLL_DELAY = 60.0
IMPORT_TIMEOUT = 30 * 60.0

GroupKey = tuple[bool, frozenset[int]]


class Publisher:
    """Pushes what the store holds outstanding to Brevo, in batches."""

    def __init__(
        self,
        client: BrevoClient,
        store: EngagementStore,
        settings: Settings,
        summary: Summary,
        logger: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.summary = summary
        self.logger = logger
        self.sleep = sleep
        self._all_list: int | None = None
        self._prepared = False

    # --- once per run ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Create missing attributes and resolve the import list, once per run."""
        if self._prepared:
            return
        existing = self.client.attributes()
        for field, attribute in self.settings.field_mapping.items():
            kind = rules.FIELD_TYPES.get(field)
            if not attribute or kind is None:
                continue
            have = existing.get(attribute.upper())
            if have is None:
                self.logger.info("Creating Brevo attribute %s (%s)", attribute, kind)
                self.client.create_attribute(attribute.upper(), kind)
            elif have != kind:
                self.logger.warning(
                    "Brevo attribute %s is %s, not %s: Brevo will drop %s values; "
                    "map %s to another attribute in field_mapping",
                    attribute, have, kind, field, field,
                )  # fmt: skip
        lists = self.client.list_ids()
        for role, list_id in self.settings.lists.items():
            if list_id not in lists:
                raise BrevoError(
                    f"list {list_id} (lists.{role}) does not exist in Brevo; "
                    "fix the lists setting or create the list"
                )
        self._all_list = self._resolve_all_list(lists)
        self._prepared = True

    def _resolve_all_list(self, lists: dict[int, str]) -> int | None:
        """Brevo's import needs a list: lists.all, else one named DEFAULT_ALL_LIST_NAME."""
        wanted = self.settings.all_list
        if wanted is not None:
            if wanted not in lists:
                raise BrevoError(f"list {wanted} (lists.all) does not exist in Brevo; fix lists")
            return wanted
        for list_id, name in lists.items():
            if name == DEFAULT_ALL_LIST_NAME:
                return list_id
        folders = self.client.folder_ids()
        folder = (
            min(folders)
            if folders
            else self.client.create("/contacts/folders", {"name": "Mailgun"})
        )
        self.logger.info("Creating Brevo list %r for imported contacts", DEFAULT_ALL_LIST_NAME)
        return self.client.create(
            "/contacts/lists", {"name": DEFAULT_ALL_LIST_NAME, "folderId": folder}
        )

    # --- each flush -----------------------------------------------------------------------
    def flush(self) -> None:
        """Push every dirty contact, then every pending event; commit as Brevo accepts."""
        if not self.store.has_outstanding():
            return
        self.prepare()
        self._push_contacts()
        self._push_events()

    def _push_contacts(self) -> None:
        after = ""
        while page := self.store.dirty_contacts(after=after, limit=CONTACT_PAGE):
            after = page[-1].email
            groups: dict[GroupKey, list[tuple[str, bytes]]] = defaultdict(list)
            for facts in page:
                key = self._group(facts)
                row = {
                    "email": facts.email,
                    "attributes": rules.brevo_attributes(
                        rules.contact_fields(facts), self.settings.field_mapping
                    ),
                }
                groups[key].append((facts.email, msgspec.json.encode(row)))
            # Submit every import of the page first: Brevo works on them while we poll.
            submitted = [
                (process_id, emails, key, time.monotonic())
                for key, rows in sorted(groups.items(), key=_group_order)
                for process_id, emails in self.client.import_contacts(rows, sorted(key[1]), key[0])
            ]
            for process_id, emails, (blocklist, list_ids), at in submitted:
                invalid = self._wait(process_id, at) if process_id is not None else 0
                self.store.mark_clean(emails)
                self.store.commit()
                self._count_import(len(emails) - invalid, blocklist, list_ids, invalid)

    def _group(self, facts: rules.ContactFacts) -> GroupKey:
        list_ids = set(rules.list_ids(facts, self.settings.lists))
        if self._all_list is not None:
            list_ids.add(self._all_list)
        return rules.blocklisted(facts, self.settings.blocklist_on), frozenset(list_ids)

    def _count_import(
        self, rows: int, blocklist: bool, list_ids: frozenset[int], invalid: int
    ) -> None:
        self.summary.contacts_upserted += rows
        if blocklist:
            self.summary.blocklisted += rows
        for list_id in list_ids:
            self.summary.added_to_list[list_id] += rows
        if invalid:
            self.summary.skip("email refused by Brevo's import", invalid)

    def _wait(self, process_id: int, submitted_at: float) -> int:
        """Poll an import sparingly until it completes; returns Brevo's invalid-email count.

        GET /processes sits in Brevo's 100-requests-per-hour bucket, hence a first poll only
        FIRST_POLL_DELAY after submission and doubling delays after that.
        """
        self.sleep(max(0.0, submitted_at + FIRST_POLL_DELAY - time.monotonic()))
        delay, waited = 0.0, 0.0
        while waited <= IMPORT_TIMEOUT:
            self.sleep(delay)
            waited += delay
            process = self.client.process(process_id)
            status = process.get("status")
            if status == "completed":
                info = (process.get("info") or {}).get("import") or {}
                return int(info.get("invalid_emails") or 0)
            if status in ("failed", "cancelled"):
                raise BrevoError(
                    f"Brevo import process {process_id} {status}: "
                    f"{process.get('error', 'no reason given')}; "
                    "its contacts stay queued in the engagement store and go again on the next run"
                )
            delay = min(MAX_POLL_DELAY, max(FIRST_POLL_DELAY, delay * 2))
        raise BrevoError(
            f"Brevo import process {process_id} still running after {IMPORT_TIMEOUT / 60:.0f} "
            "minutes; its contacts stay queued and go again on the next run"
        )

    def _push_events(self) -> None:
        while page := self.store.pending_events(limit=EVENT_PAGE):
            self.client.send_events(page, self._events_answered)

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


def _group_order(item: tuple[GroupKey, object]) -> tuple[bool, list[int]]:
    return item[0][0], sorted(item[0][1])
