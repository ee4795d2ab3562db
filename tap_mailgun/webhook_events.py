"""The `webhook_events` stream: events captured by `tap-mailgun-webhooks`, read from its spool.

Records have the `events` stream's shape (built by the same `event_record`) plus `received_at`
and `webhook_sequence`, the spool's row sequence. The sequence is the bookmark: rows are read
in sequence order past it, so a run neither skips nor repeats a row, whatever the event
timestamps. An event that also arrives by polling has the same `id` and `timestamp`; the target
applies it once.

With `webhook_follow_seconds`, a run does not end when it has read the spool: it goes on
reading what the receiver spools for that long, writing STATE after each new batch, so a target
that acts on each STATE (target-brevo's fast lane) applies an event within about a second of its
arrival. The fast lane's job sets it; the 15-minute job reads the spool once and ends.

It carries every event the receiver accepted: which domains and event types reach it is
chosen where the webhooks are registered in Mailgun (the `domains` and `event_types` settings
apply to polling).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel
from typing_extensions import override

from mailgun_webhooks.spool import Spool, SpooledEvent, SpoolError, is_database_url
from tap_mailgun.client import ONE_LINE_ERRORS, MailgunRunError
from tap_mailgun.records import event_record
from tap_mailgun.sdk_compat import OneLineSyncErrors, write_state_now
from tap_mailgun.streams import load_schema

if TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context

DEFAULT_RETENTION_DAYS = 7
FOLLOW_POLL_SECONDS = 0.5  # how often a following run looks for newly spooled events
SEQUENCE = "webhook_sequence"


def webhook_events_schema() -> dict[str, Any]:
    """The `events` schema plus `received_at` and the spool sequence."""
    schema = load_schema("events")
    schema.setdefault("properties", {}).update(
        {
            "received_at": {"type": ["string", "null"], "format": "date-time"},
            SEQUENCE: {"type": "integer"},
        }
    )
    return schema


def webhook_record(event: SpooledEvent) -> dict[str, Any]:
    """One spooled event as a record: the `events` shape plus `received_at` and the sequence."""
    record = event_record(event.event_data, event.domain)
    record["received_at"] = event.received_at
    record[SEQUENCE] = event.seq
    return record


class WebhookEventsStream(OneLineSyncErrors, Stream):
    """Mailgun events pushed to the webhook receiver, read incrementally from its spool."""

    one_line_errors = ONE_LINE_ERRORS

    name = "webhook_events"
    primary_keys = ("id", "timestamp")
    replication_key = SEQUENCE
    # As for `events`: records hold JSON-native values and the schema is open, so conforming
    # types would change nothing.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap) -> None:
        """Build the stream for `tap`, whose config has `webhook_spool_path`."""
        super().__init__(tap, schema=webhook_events_schema())

    @property
    @override
    def is_sorted(self) -> bool:
        """Rows come in sequence order, so an interrupted run resumes from its bookmark."""
        return True

    @override
    def get_starting_replication_key_value(self, context: Context | None) -> int:
        """The sequence bookmark, else 0. `start_date` is a time for the polled streams; it
        means nothing for a sequence, and the spool holds only what Mailgun pushed anyway."""
        state = self.get_context_state(context)
        value = state.get("replication_key_value")
        return int(value) if value and state.get("replication_key") == SEQUENCE else 0

    @override
    def compare_start_date(self, value: str, start_date_value: str) -> str:
        """Keep the sequence bookmark: it is not comparable with `start_date`."""
        return value

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Spooled events past the bookmark; rows read by an earlier run may be pruned first."""
        location: str | Path = self.config["webhook_spool_path"]
        if not is_database_url(location):
            location = Path(location).expanduser()
            if not location.exists():
                self.logger.warning(
                    "No webhook spool at %s yet: start `tap-mailgun-webhooks --spool %s` and "
                    "register its URL in Mailgun; reading nothing this run.",
                    location,
                    location,
                )
                return
        start = self.get_starting_replication_key_value(context)
        try:
            spool = Spool(location)
        except SpoolError as exc:
            raise MailgunRunError(f"{exc} (webhook_spool_path)") from None
        with spool:
            if start > spool.last_sequence():
                start = self._restart(context, start, spool)
            self._prune(spool, start)
            last = start
            for event in spool.read_after(start):
                last = event.seq
                yield webhook_record(event)
            follow = float(self.config.get("webhook_follow_seconds") or 0)
            if follow > 0:
                yield from self._follow(spool, last, time.monotonic() + follow)

    def _follow(self, spool: Spool, last: int, until: float) -> Iterator[dict[str, Any]]:
        # STATE first, then each poll: what was read is applied by then (in the fast lane)
        # and its bookmark kept, whatever happens to the rest of the run.
        while True:
            write_state_now(self)
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(FOLLOW_POLL_SECONDS, left))
            for event in spool.read_after(last):
                last = event.seq
                yield webhook_record(event)

    def _restart(self, context: Context | None, bookmark: int, spool: Spool) -> int:
        # A bookmark past anything this spool ever numbered means the file was replaced (e.g.
        # deleted and recreated). Resuming there would skip its events: read it all instead;
        # the target ignores the events it has already applied.
        self.logger.warning(
            "The webhook_events bookmark %d is past the last sequence of %s (%d): the spool was "
            "replaced; reading it from the start.",
            bookmark,
            spool.location,
            spool.last_sequence(),
        )
        self.get_context_state(context).pop("replication_key_value", None)
        return 0

    def _prune(self, spool: Spool, read_through: int) -> None:
        # Only rows at or below the starting bookmark are certainly delivered: the state that
        # holds it was emitted by the target after writing them.
        days = self.config.get("webhook_retention_days", DEFAULT_RETENTION_DAYS)
        if read_through <= 0 or days is None:
            return
        cutoff = datetime.now(timezone.utc) - timedelta(days=float(days))
        pruned = spool.prune(
            read_through=read_through, received_before=cutoff.isoformat(timespec="microseconds")
        )
        if pruned:
            self.logger.info("Pruned %d webhook events read more than %s days ago", pruned, days)
