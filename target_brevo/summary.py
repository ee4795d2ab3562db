"""The end-of-run summary: what Brevo got, what was skipped and why, and what it cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

WARNINGS_PER_REASON = 10  # then only counted: one bad feed must not flood the log


@dataclass
class Summary:
    """Counters filled during a run and logged once at its end."""

    contacts_upserted: int = 0
    blocklisted: int = 0
    added_to_list: Counter[int] = field(default_factory=Counter)
    removed_from_list: Counter[int] = field(default_factory=Counter)  # a corrected rule
    events_sent: int = 0
    events_trimmed: int = 0  # sent with text properties cut to fit Brevo's limits
    imports_failed: int = 0
    imports_unconfirmed: int = 0
    duplicates_ignored: int = 0
    # Mailgun validated these addresses undeliverable or do_not_send and Brevo does not have
    # them: never created (rules.withheld), nor their events sent
    contacts_withheld: int = 0
    events_withheld: int = 0
    events_left_for_full_run: int = 0  # fast lane: events that do not suppress anyone
    skipped: Counter[str] = field(default_factory=Counter)
    streams_skipped: set[str] = field(default_factory=set)

    def skip(self, reason: str, count: int = 1) -> bool:
        """Count rows left out, by reason; True while they are few enough to warn about each."""
        self.skipped[reason] += count
        return self.skipped[reason] <= WARNINGS_PER_REASON

    def as_dict(self, calls: Counter[str], retries: int, dry_run: bool) -> dict[str, Any]:
        """The summary as plain data (logged as one JSON line)."""
        return {
            "dry_run": dry_run,
            "contacts_upserted": self.contacts_upserted,
            "blocklisted": self.blocklisted,
            "added_to_list": {str(k): v for k, v in sorted(self.added_to_list.items())},
            "removed_from_list": {str(k): v for k, v in sorted(self.removed_from_list.items())},
            "events_sent": self.events_sent,
            "events_trimmed": self.events_trimmed,
            "imports_failed": self.imports_failed,
            "imports_unconfirmed": self.imports_unconfirmed,
            "duplicates_ignored": self.duplicates_ignored,
            "contacts_withheld": self.contacts_withheld,
            "events_withheld": self.events_withheld,
            "events_left_for_full_run": self.events_left_for_full_run,
            "rows_skipped": dict(sorted(self.skipped.items())),
            "streams_skipped": sorted(self.streams_skipped),
            "api_calls": dict(sorted(calls.items())),
            "retries": retries,
        }
