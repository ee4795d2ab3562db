"""One sink per kind of stream: each turns its records into engagement-store updates.

Sinks never talk to Brevo: they write to the store, which is the outbox the publisher pushes
from whenever the target is about to emit STATE. Each record is reduced at once to the few facts
the rules need (so a batch in memory is small) and checked for what the target uses; a record
that does not fit is skipped with a reason and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from target_brevo import rules

if TYPE_CHECKING:
    from target_brevo.target import TargetBrevo

EVENT_STREAMS = ("events", "webhook_events")
SUPPRESSION_FLAGS = {
    "bounces": "hard_bounce",
    "complaints": "complained",
    "unsubscribes": "unsubscribed",
}
LIST_MEMBER_STREAM = "list_members"


class BrevoSink(BatchSink):
    """Base of the target's sinks: facts are collected per record, stored per batch."""

    def __init__(
        self,
        target: TargetBrevo,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        self.brevo = target
        self.pending: list[Any] = []
        super().__init__(target, stream_name, schema, key_properties)

    @property
    def validate_schema(self) -> bool:
        """Full JSON-schema validation only when `validate_records` asks for it (it is slow)."""
        return bool(self.config.get("validate_records", False))

    def _parse_timestamps_in_record(
        self, record: dict[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        """Leave timestamps as the tap wrote them.

        The SDK would parse every date-time field into a datetime (a large share of the
        per-record cost); the rules read the one timestamp they need and canonicalise it.
        """

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Reduce the record to facts now; a record that cannot be used is counted and skipped."""
        facts = self.facts(record)
        if not isinstance(facts, str):
            self.pending.append(facts)
            return
        if self.brevo.summary.skip(f"{self.stream_name}: {facts}"):
            which = str(record.get("id") or record.get("address"))[:80]
            self.logger.warning("Skipped %s record %r: %s", self.stream_name, which, facts)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Write the batch's facts to the store and commit them."""
        batch, self.pending = self.pending, []
        if batch:
            with self.brevo.critical():
                self.store(batch)
                self.brevo.store.commit()

    def facts(self, record: dict[str, Any]) -> Any:
        """The facts one record contributes, or the reason it is skipped."""
        raise NotImplementedError

    def store(self, batch: list[Any]) -> None:
        """Apply one batch of facts to the engagement store."""
        raise NotImplementedError


class EventsSink(BrevoSink):
    """events and webhook_events: per-message engagement, bounce and unsubscribe flags, events."""

    def facts(self, record: dict[str, Any]) -> rules.EventFacts | str:
        """See `rules.event_facts`."""
        return rules.event_facts(record, self.brevo.settings.event_names)

    def store(self, batch: list[Any]) -> None:
        """New events only: one replayed or also received by webhook is counted once."""
        new = self.brevo.store.apply_events(batch)
        self.brevo.summary.duplicates_ignored += len(batch) - new


class SuppressionSink(BrevoSink):
    """bounces, complaints, unsubscribes: a flag on the contact of each address."""

    def facts(self, record: dict[str, Any]) -> dict[str, Any] | str:
        """The contact's email and the flag this stream sets."""
        email = rules.normalize_email(record.get("address"))
        if email is None:
            return "invalid email"
        return {"email": email, SUPPRESSION_FLAGS[self.stream_name]: True}

    def store(self, batch: list[Any]) -> None:
        """Flags only ever turn on."""
        self.brevo.store.upsert_contacts(batch)


class ListMemberSink(BrevoSink):
    """list_members: names for contacts (vars first, else the name split at the first space)."""

    def facts(self, record: dict[str, Any]) -> dict[str, Any] | str:
        """The contact's email and names."""
        email = rules.normalize_email(record.get("address"))
        if email is None:
            return "invalid email"
        first_name, last_name = rules.split_name(record)
        return {"email": email, "first_name": first_name, "last_name": last_name}

    def store(self, batch: list[Any]) -> None:
        """A known name is kept when the new record has none."""
        self.brevo.store.upsert_contacts(batch)


class SkippedStreamSink(BatchSink):
    """Any other stream: accepted, so a whole catalog can be piped in, and ignored."""

    def __init__(
        self,
        target: TargetBrevo,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        if stream_name not in target.summary.streams_skipped:
            target.summary.streams_skipped.add(stream_name)
            self.logger.info(
                "Stream %r is not one target-brevo writes; its records are skipped", stream_name
            )

    @property
    def validate_schema(self) -> bool:
        """Nothing is written, so nothing is validated."""
        return False

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Ignore the record."""

    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing to write."""


def sink_class(stream_name: str) -> type[BatchSink]:
    """The sink for a stream, by the name tap-mailgun gives it."""
    if stream_name in EVENT_STREAMS:
        return EventsSink
    if stream_name in SUPPRESSION_FLAGS:
        return SuppressionSink
    if stream_name == LIST_MEMBER_STREAM:
        return ListMemberSink
    return SkippedStreamSink
