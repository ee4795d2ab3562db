"""tap-mailgun: the Tap class, its settings and its streams."""

from __future__ import annotations

import json
import sys
from contextvars import ContextVar
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click
from singer_sdk import Tap, about
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.encoding.base import SingerMessageType

from tap_mailgun import streams
from tap_mailgun.client import DEFAULT_MAX_RETRIES, MailgunRunError, MailgunUnknownDomainError
from tap_mailgun.webhook_events import DEFAULT_RETENTION_DAYS, WebhookEventsStream

if TYPE_CHECKING:
    from singer_sdk import Stream
    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib.encoding.simple import Message

# Failures of the current CLI run, so `invoke` can exit non-zero once every stream has synced.
_RUN_FAILURES: ContextVar[list[str] | None] = ContextVar("tap_mailgun_run_failures", default=None)


class MessageWriter(MsgSpecWriter):
    """The SDK's msgspec writer, flushing stdout after every message except RECORD.

    Flushing each record costs a write system call per record (a third of the tap's time on a
    pipe). Records now leave in full buffers; every STATE message still flushes, with all the
    records before it, so a target never holds a state ahead of the records it covers.
    """

    def write_message(self, message: Message) -> None:
        """Write one message; flush unless it is a record."""
        sys.stdout.buffer.write(self.format_message(message))
        if message.type != SingerMessageType.RECORD:
            sys.stdout.flush()


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


class TapMailgun(Tap):
    """Singer tap for Mailgun. Streams: domains, events, bounces, complaints, unsubscribes,
    tags, domain_metrics, tag_metrics, mailing_lists, list_members, and webhook_events when
    webhook_spool_path is set."""

    name = "tap-mailgun"
    package_name = "mailgun-brevo-singer"  # the distribution that ships both plugins
    # msgspec encodes Singer messages several times faster than the stdlib writer.
    message_writer_class = MessageWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Mailgun private API key (MAILGUN_API_KEY). Sent only as basic auth.",
        ),
        th.Property(
            "region",
            th.StringType,
            default="us",
            allowed_values=["us", "eu"],
            description="us (api.mailgun.net) or eu (api.eu.mailgun.net): where the account is.",
        ),
        th.Property(
            "base_url",
            th.StringType,
            description="API root overriding region, e.g. a local fake: http://127.0.0.1:8080.",
        ),
        th.Property(
            "domains",
            th.ArrayType(th.StringType),
            description="Sending domains to read (MAILGUN_DOMAIN); an item may hold several, "
            "comma-separated. Empty: every active domain of the account.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Earliest event and metrics time read on a first run. Default: 30 days "
            "ago (Mailgun keeps events 1 to 30 days). Suppressions ignore it: a first run "
            "reads them all.",
        ),
        th.Property(
            "event_lag_minutes",
            th.IntegerType(minimum=0),
            default=streams.DEFAULT_EVENT_LAG_MINUTES,
            description="Read events only up to this many minutes ago: Mailgun may still "
            "insert later-stored events into newer pages; older pages are final.",
        ),
        th.Property(
            "event_types",
            th.ArrayType(th.StringType),
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
            "webhook_spool_path",
            th.StringType,
            description="SQLite spool written by tap-mailgun-webhooks; when set, the "
            "webhook_events stream reads it.",
        ),
        th.Property(
            "webhook_retention_days",
            th.NumberType(minimum=0),
            default=DEFAULT_RETENTION_DAYS,
            description="Delete spooled webhook events read by a run at least this many days ago.",
        ),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        """Every Mailgun stream, plus webhook_events when a spool is configured."""
        found: list[Stream] = [stream_type(self) for stream_type in streams.STREAM_TYPES]
        if self.config.get("webhook_spool_path"):
            found.append(WebhookEventsStream(tap=self))
        return found

    @classmethod
    def print_about(cls, output_format: str | None = None) -> None:
        """The SDK's --about; the JSON form also lists the streams with keys and replication."""
        if output_format != "json":
            super().print_about(output_format)
            return
        info = about.AboutFormatter.get_formatter("json").format_about(cls._get_about_info())
        data = json.loads(info)
        data["streams"] = [_describe(stream_type) for stream_type in streams.STREAM_TYPES]
        webhooks = {**_describe(WebhookEventsStream), "when": "webhook_spool_path is set"}
        data["streams"].append(webhooks)
        print(json.dumps(data, indent=2))

    @cached_property
    def domain_names(self) -> list[str]:
        """The configured domains, or else every active domain of the account (read once)."""
        # Meltano passes MAILGUN_DOMAIN=a.com,b.com to this list setting as ["a.com,b.com"].
        configured = [
            name.strip()
            for item in self.config.get("domains") or []
            for name in item.split(",")
            if name.strip()
        ]
        if configured:
            return configured
        listing = self.streams["domains"]
        assert isinstance(listing, streams.DomainsStream)
        names = [d["name"] for d in listing.request_records(None) if d.get("state") == "active"]
        self.logger.info("No domains configured; reading the %d active ones", len(names))
        return names

    @cached_property
    def failures(self) -> list[str]:
        """Partitions that failed in this run (shared with `invoke` when run from the CLI)."""
        shared = _RUN_FAILURES.get()
        return shared if shared is not None else []

    @cached_property
    def unknown_domains(self) -> set[str]:
        """Domains Mailgun answered 404 for in this run: later streams skip them."""
        return set()

    def report_failure(self, stream: str, context: Context, error: Exception) -> None:
        """Log a failed partition (e.g. one domain) so the run carries on with the others."""
        if isinstance(error, MailgunUnknownDomainError):
            self.unknown_domains.add(error.domain)
            message = f"{error} (its other streams are skipped this run)"
        else:
            where = ", ".join(f"{k}={v}" for k, v in context.items())
            message = f"{stream} ({where}): {error}"
        self.failures.append(message)
        self.logger.error("%s; the rest of the sync goes on.", message)

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:
        """Run as the SDK does, then exit non-zero when any partition failed."""
        failures: list[str] = []
        token = _RUN_FAILURES.set(failures)
        try:
            super().invoke(*args, **kwargs)
        except MailgunRunError as stopped:
            # Nothing can sync (refused key, unreachable host): say so plainly, no traceback.
            raise click.ClickException(str(stopped)) from None
        finally:
            _RUN_FAILURES.reset(token)
        if failures:
            raise click.ClickException(
                f"{len(failures)} part(s) of the sync failed; everything else was synced:\n- "
                + "\n- ".join(failures)
            )


if __name__ == "__main__":
    TapMailgun.cli()
