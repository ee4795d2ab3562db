"""One sink per kind of stream: each turns its records into engagement-store updates.

Sinks never talk to Brevo: they write to the store, which is the outbox the publisher pushes
from whenever the target is about to emit STATE. Each record is reduced at once to the few facts
the rules need (so a batch in memory is small) and checked for what the target uses; a record
that does not fit is skipped with a reason and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from singer_sdk.sinks import BatchSink
from typing_extensions import override

from target_brevo import rules
from target_brevo.sdk_compat import RawTimestampSink

if TYPE_CHECKING:
    from singer_sdk import Target

    from target_brevo.settings import Settings
    from target_brevo.store import EngagementStore
    from target_brevo.summary import Summary

EVENT_STREAMS = ("events", "webhook_events")
# Records between two calls of `SinkHost.meanwhile`: often enough to keep Brevo's pace (10
# calls a second) fed while reading ~20,000 records a second, cheap enough not to show.
MEANWHILE_EVERY = 256
LIST_MEMBER_STREAM = "list_members"
# A sink's first batch in a run is this many records and each next one twice the last, up to
# batch_size_rows (10,000 by default): the run's first events reach the store, and so Brevo,
# after a thousand records rather than ten thousand, and later batches keep a large batch's
# lower cost per record.
FIRST_BATCH_ROWS = 1_000
# While the run waits for Brevo's events budget (`SinkHost.brevo_bound`), a batch is written to
# the store, and committed, this many facts at a time, with Brevo's turn (`SinkHost.meanwhile`)
# between two parts: writing 10,000 records takes about a second, long enough to miss the next
# rate-limit window. Smaller commits cost CPU (each rewrites the index pages it touches), which
# is spare only then: otherwise the batch is written whole. A crash between two parts is a
# crash between two batches: the input since the last STATE is read again, its events already
# stored count once (`EngagementStore.apply_events`) and its contacts merge to the same state.
STORE_PART_ROWS = 1_000


@runtime_checkable
class SinkHost(Protocol):
    """What a sink needs from its target: the settings, the store, the summary, a way to write."""

    settings: Settings
    store: EngagementStore
    summary: Summary

    def writing(self) -> AbstractContextManager[None]:
        """A stretch of writing (the first starts the run) that a signal aborts, never re-enters."""

    def meanwhile(self) -> None:
        """A moment between two records, or two parts of a batch's writing: the target may
        send Brevo what it already stored."""

    def brevo_bound(self) -> bool:
        """Whether the run now waits for Brevo's events budget, not for its own work."""


def host_of(target: Target) -> SinkHost:
    """The target as what its sinks need, or a TypeError naming what it lacks."""
    if not isinstance(target, SinkHost):
        raise TypeError(f"{type(target).__name__} lacks settings, store, summary or writing()")
    return target


class BrevoSink(RawTimestampSink):
    """Base of the target's sinks: facts are collected per record, stored per batch."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        self.host = host_of(target)
        self.pending: list[Any] = []
        self._records = 0
        self._batch_rows = FIRST_BATCH_ROWS
        super().__init__(target, stream_name, schema, key_properties)

    @property
    @override
    def validate_schema(self) -> bool:
        """Full JSON-schema validation only when `validate_records` asks for it (it is slow)."""
        return bool(self.config.get("validate_records", False))

    @override
    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Reduce the record to facts now; a record that cannot be used is counted and skipped."""
        self._records += 1
        if self._records % MEANWHILE_EVERY == 0:
            self.host.meanwhile()
        facts = self.facts(record)
        if facts is None:  # left for another run on purpose (see EventsSink.facts)
            return
        if not isinstance(facts, str):
            self.pending.append(facts)
            return
        if self.host.summary.skip(f"{self.stream_name}: {facts}"):
            which = str(record.get("id") or record.get("address"))[:80]
            self.logger.warning("Skipped %s record %r: %s", self.stream_name, which, facts)

    @property
    @override
    def max_size(self) -> int:
        """Records in this batch: growing from FIRST_BATCH_ROWS to batch_size_rows."""
        return min(super().max_size, self._batch_rows)

    @override
    def process_batch(self, context: dict[str, Any]) -> None:
        """Write the batch's facts to the store and commit them, in parts while Brevo's pace
        bounds the run (STORE_PART_ROWS); the next batch is larger."""
        if not self.pending:
            return
        # The facts leave `pending` only inside the stretch of writing: a signal before it
        # finds them still pending and its drain writes them; one inside it, or between two
        # parts, aborts the run without STATE (a drain then would lose what was taken).
        with self.host.writing():
            batch, self.pending = self.pending, []
            self._batch_rows = min(2 * self._batch_rows, super().max_size)
            part = STORE_PART_ROWS if self.host.brevo_bound() else len(batch)
            for start in range(0, len(batch), part):
                self.store(batch[start : start + part])
                self.host.store.commit()
                self.host.meanwhile()

    def facts(self, record: dict[str, Any]) -> Any:
        """The facts one record contributes, the reason it is skipped, or None when another
        run applies it."""
        raise NotImplementedError

    def store(self, batch: list[Any]) -> None:
        """Apply one batch of facts to the engagement store."""
        raise NotImplementedError


class EventsSink(BrevoSink):
    """events and webhook_events: per-message engagement, bounce and unsubscribe flags, events."""

    def facts(self, record: dict[str, Any]) -> rules.EventFacts | str | None:
        """See `rules.event_facts`; in the fast lane, None for an event that does not suppress
        its contact: the 15-minute job reads the same events and applies it (the fast lane's
        bookmark moving past it loses nothing)."""
        facts = rules.event_facts(record, self.host.settings.event_names)
        if (
            self.host.settings.fast_lane
            and isinstance(facts, rules.EventFacts)
            and not rules.suppresses(facts)
        ):
            self.host.summary.events_left_for_full_run += 1
            return None
        return facts

    def store(self, batch: list[Any]) -> None:
        """New events only: one replayed or also received by webhook is counted once."""
        new = self.host.store.apply_events(batch)
        self.host.summary.duplicates_ignored += len(batch) - new
        self.host.summary.events_withheld = self.host.store.events_withheld


class ContactSink(BrevoSink):
    """A stream whose record is about the contact of its `address`: the contact is merged into
    the store's (`rules.merge_contact`: flags only ever turn on, a known name is kept when the
    new record has none)."""

    def facts(self, record: dict[str, Any]) -> rules.ContactState | str:
        """The contact of the record's address, or the reason it is skipped."""
        email = rules.normalize_email(record.get("address"))
        if email is None:
            return "invalid email"
        return self.contact(record, email)

    def contact(self, record: dict[str, Any], email: str) -> rules.ContactState:
        """What the record says about the contact of `email` (its normalized address)."""
        raise NotImplementedError

    def store(self, batch: list[Any]) -> None:
        """Merge the batch's contacts into the store's."""
        self.host.store.upsert_contacts(batch)


class SuppressionSink(ContactSink):
    """bounces, complaints, unsubscribes: a flag on the contact of each address (and Mailgun's
    verdict on it, when mailgun-validate added one)."""

    def contact(self, record: dict[str, Any], email: str) -> rules.ContactState:
        """The contact, with the flag this stream sets."""
        return rules.suppression_contact(self.stream_name, email, rules.record_verdict(record))


class ListMemberSink(ContactSink):
    """list_members: names for contacts (vars first, else the name split at the first space)."""

    def contact(self, record: dict[str, Any], email: str) -> rules.ContactState:
        """The contact, with its names."""
        return rules.member_contact(record, email)


class SkippedStreamSink(BatchSink):
    """Any other stream: accepted, so a whole catalog can be piped in, and ignored."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        skipped = host_of(target).summary.streams_skipped
        if stream_name not in skipped:
            skipped.add(stream_name)
            self.logger.info(
                "Stream %r is not one target-brevo writes; its records are skipped", stream_name
            )

    @property
    @override
    def validate_schema(self) -> bool:
        """Nothing is written, so nothing is validated."""
        return False

    @override
    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Ignore the record."""

    @override
    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing to write."""


def sink_class(stream_name: str) -> type[BatchSink]:
    """The sink for a stream, by the name tap-mailgun gives it."""
    if stream_name in EVENT_STREAMS:
        return EventsSink
    if stream_name in rules.SUPPRESSION_FLAGS:
        return SuppressionSink
    if stream_name == LIST_MEMBER_STREAM:
        return ListMemberSink
    return SkippedStreamSink
