"""tap-mailgun: the Tap class, its settings and its streams."""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click
from singer_sdk import Tap, about
from singer_sdk import typing as th
from typing_extensions import override

from plugin_cli import CheckedConfigFiles, check_base_url, one_line_errors
from tap_mailgun import streams
from tap_mailgun.client import (
    CONNECTION_SETTINGS,
    DEFAULT_MAX_RETRIES,
    ONE_LINE_ERRORS,
    MailgunStream,
    RunReport,
)
from tap_mailgun.event_logs import DEFAULT_CONCURRENT_TIME_SLICES, LogsEventsStream
from tap_mailgun.sdk_compat import MessageWriter, about_info
from tap_mailgun.webhook_events import DEFAULT_RETENTION_DAYS, WebhookEventsStream

if TYPE_CHECKING:
    from singer_sdk import Stream

# The report of the current CLI run, so `invoke` can exit non-zero once every stream has synced.
_RUN_REPORT: ContextVar[RunReport | None] = ContextVar("tap_mailgun_run_report", default=None)


def _describe(stream_type: type[Stream]) -> dict[str, Any]:
    """A stream class's name, key and replication, for --about."""
    # Streams declare these as class attributes; the SDK types them as instance properties.
    declared: Any = stream_type
    return {
        "name": declared.name,
        "key_properties": list(declared.primary_keys or []),
        "replication_key": declared.replication_key,
        "replication_method": "INCREMENTAL" if declared.replication_key else "FULL_TABLE",
    }


class TapMailgun(CheckedConfigFiles, Tap):
    """Singer tap for Mailgun: events, suppressions, tags, metrics, domains and mailing lists."""

    # The docstring above is --about's description, kept to one line: the SDK's Markdown
    # --about dedents its header, and a docstring's indented second line would undo that.
    # webhook_events is the eleventh stream, when webhook_spool_path is set.
    name = "tap-mailgun"
    # --version reads the version of this distribution (it ships all three plugins).
    package_name = "mailgun-brevo-singer"
    # msgspec encodes Singer messages several times faster than the stdlib writer.
    message_writer_class = MessageWriter

    config_jsonschema = th.PropertiesList(
        *CONNECTION_SETTINGS,
        th.Property(
            "domains",
            th.ArrayType(th.StringType),
            default=[],
            description="Sending domains to read; an item may hold several, comma-separated. "
            "Empty: every active domain of the account.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Earliest event and metrics time read on a first run. Default: 30 days "
            "ago (Mailgun keeps events 1 to 30 days). Suppressions ignore it: a first run "
            "reads them all.",
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            description="Read events only before this moment (a backfill of a past period). "
            "Default: now - event_lag_minutes, which it never passes.",
        ),
        th.Property(
            "event_lag_minutes",
            th.IntegerType(minimum=0),
            default=streams.DEFAULT_EVENT_LAG_MINUTES,
            description="Read events only up to this many minutes ago: Mailgun may still "
            "insert later-stored events into newer pages; older pages are final.",
        ),
        th.Property(
            "event_source",
            th.StringType,
            default="logs",
            allowed_values=["logs", "events"],
            description="Where the events stream reads: logs (the Logs API, one account-wide "
            "query) or events (the deprecated Events API, one query per domain). Switching "
            "keeps the bookmarks.",
        ),
        th.Property(
            "event_types",
            th.ArrayType(th.StringType),
            default=[],
            description="Only these event types (server-side filter), e.g. [delivered, failed]. "
            "Empty: all.",
        ),
        th.Property(
            "metrics_resolution",
            th.StringType,
            default="day",
            allowed_values=["hour", "day", "month"],
            description="Time bucket of domain_metrics and tag_metrics.",
        ),
        th.Property(
            "metrics_lookback_days",
            th.IntegerType(minimum=0),
            default=streams.DEFAULT_METRICS_LOOKBACK_DAYS,
            description="Re-read metrics this many days before the bookmark: they settle late.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=DEFAULT_MAX_RETRIES,
            description="Retries of a request after 429, 5xx or a connection error, with "
            "exponential backoff and jitter (or the wait the server asks for).",
        ),
        th.Property(
            "include_subaccounts",
            th.BooleanType,
            default=False,
            description="Also read the subaccounts' data where Mailgun reads it for the whole "
            "account (tags, metrics, with a `subaccount` column; events with event_source logs).",
        ),
        th.Property(
            "concurrent_time_slices",
            th.IntegerType(minimum=1, maximum=64),
            default=DEFAULT_CONCURRENT_TIME_SLICES,
            description="With event_source logs, the window is read as up to this many time "
            "slices at once (none shorter than 10 s), emitted in order: one query gives at "
            "most 400 events/s at 250 ms a request, 32 slices measured 2,770. 1 reads it in one "
            "query.",
        ),
        th.Property(
            "concurrent_domains",
            th.IntegerType(minimum=1, maximum=64),
            default=streams.DEFAULT_CONCURRENT_DOMAINS,
            description="Sending domains read at a time (suppressions, domain details, events "
            "from the Events API); one 429 pauses them all. 1 reads one domain at a time.",
        ),
        th.Property(
            "webhook_spool_path",
            th.StringType,
            secret=True,  # a postgresql:// URL may carry a password
            description="Spool written by tap-mailgun-webhooks (a SQLite file or a "
            "postgresql:// URL); when set, the webhook_events stream reads it.",
        ),
        th.Property(
            "webhook_retention_days",
            # Whole days: the SDK reads numbers other than integers from no environment
            # variable (TAP_MAILGUN_WEBHOOK_RETENTION_DAYS, `--config=ENV`).
            th.IntegerType(minimum=0),
            default=DEFAULT_RETENTION_DAYS,
            description="Delete spooled webhook events read by a run at least this many days ago.",
        ),
        th.Property(
            "webhook_follow_seconds",
            th.IntegerType(minimum=0),
            default=0,
            description="Keep reading newly spooled webhook events for this many seconds, "
            "writing STATE after each batch (the fast lane); 0: read the spool once.",
        ),
    ).to_dict()

    @override
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The SDK's tap; with validated settings, base_url is also checked to be a URL."""
        super().__init__(*args, **kwargs)
        if kwargs.get("validate_config", True) and self.config.get("base_url"):
            check_base_url("base_url", str(self.config["base_url"]), "https://api.mailgun.net")

    @override
    def discover_streams(self) -> list[Stream]:
        """Every Mailgun stream, plus webhook_events when a spool is configured."""
        found: list[Stream] = [
            *streams.build_streams(self, self.report, self.stream_types(self.config))
        ]
        if self.config.get("webhook_spool_path"):
            found.append(WebhookEventsStream(tap=self))
        return found

    @staticmethod
    def stream_types(config: Any) -> tuple[type[MailgunStream], ...]:
        """The stream classes of a run: `events` reads the Logs API unless event_source is
        `events`."""
        if config.get("event_source", "logs") == "events":
            return streams.STREAM_TYPES
        return tuple(
            LogsEventsStream if t is streams.EventsStream else t for t in streams.STREAM_TYPES
        )

    @classmethod
    @override
    def print_about(cls, output_format: str | None = None) -> None:
        """The SDK's --about; the JSON form also lists the streams with keys and replication."""
        if output_format != "json":
            super().print_about(output_format)
            return
        info = about.AboutFormatter.get_formatter("json").format_about(about_info(cls))
        data = json.loads(info)
        data["streams"] = [_describe(stream_type) for stream_type in streams.STREAM_TYPES]
        webhooks = {**_describe(WebhookEventsStream), "when": "webhook_spool_path is set"}
        data["streams"].append(webhooks)
        print(json.dumps(data, indent=2))

    @cached_property
    def report(self) -> RunReport:
        """What failed in this run (shared with `invoke` when run from the CLI)."""
        return _RUN_REPORT.get() or RunReport()

    @classmethod
    @override
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """The SDK's --test (a connection test), whose failures end in one line too."""
        with one_line_errors(cls.logger, *ONE_LINE_ERRORS):
            super().cb_test(ctx, param, value)

    @classmethod
    @override
    def invoke(cls, *args: Any, **kwargs: Any) -> None:
        """Run as the SDK does, then exit non-zero when any partition failed."""
        report = RunReport()
        token = _RUN_REPORT.set(report)
        try:
            # Nothing can sync (a refused key, an unreachable host, a base_url that is no URL):
            # said plainly, no traceback.
            with one_line_errors(cls.logger, *ONE_LINE_ERRORS):
                super().invoke(*args, **kwargs)
        finally:
            _RUN_REPORT.reset(token)
        failures = report.failures
        if failures:
            raise click.ClickException(
                f"{len(failures)} part(s) of the sync failed; everything else was synced:\n- "
                + "\n- ".join(failures)
            )


if __name__ == "__main__":
    TapMailgun.cli()
