"""mailgun-validate: the mapper between tap-mailgun and target-brevo.

    meltano run tap-mailgun mailgun-validate target-brevo

Every record of a stream that names a person (`address_fields`) gets `validation`: Mailgun's
verdict on the address, or null. Validation is billed per address, so:
- a verdict is cached (`validation_cache`) and reused until `validation_ttl_days` old;
- an address is validated at most once per run, whatever the number of its records;
- `max_validations_per_run` caps what a run spends; the rest pass through unvalidated;
- when Mailgun stays unavailable after the retries, the rest of the run passes through
  unvalidated: the pipeline is never held up by validation;
- `dry_run` spends nothing and counts what it would have spent.
One summary line on stderr at the end says what was spent and what went unvalidated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import click
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.mapper_base import InlineMapper
from singer_sdk.singerlib import (
    ActivateVersionMessage,
    Message,
    RecordMessage,
    SchemaMessage,
    StateMessage,
)
from typing_extensions import override

from mailgun_validate.cache import ValidationCache
from mailgun_validate.client import (
    ValidationClient,
    ValidationRefusedError,
    ValidationRejectedError,
    ValidationUnavailableError,
)
from mailgun_validate.verdicts import (
    DEFAULT_ADDRESS_FIELDS,
    address_of,
    is_fresh,
    verdict_of,
    with_validation,
)
from plugin_cli import SettingError, one_line_errors
from tap_mailgun.client import CONNECTION_SETTINGS, DEFAULT_MAX_RETRIES
from tap_mailgun.sdk_compat import MessageWriter

DEFAULT_TTL_DAYS = 30
DEFAULT_MAX_VALIDATIONS = 1000


@dataclass
class Tally:
    """What a run did, for the summary line: distinct addresses by outcome, and records."""

    records: int = 0  # records that carry an address
    unvalidated_records: int = 0
    from_cache: int = 0
    validated: int = 0
    over_budget: int = 0
    unavailable: int = 0
    rejected: int = 0
    would_validate: int = 0

    def line(self, *, budget: int, dry_run: bool) -> str:
        """The summary line."""
        addresses = (
            self.from_cache
            + self.validated
            + self.over_budget
            + self.unavailable
            + self.rejected
            + self.would_validate
        )
        spent = (
            f"dry run: {self.would_validate} validation(s) would be billed, none was"
            if dry_run
            else f"{self.validated} validated (billed)"
        )
        return (
            f"mailgun-validate: {self.records} record(s) with an address, {addresses} "
            f"address(es): {self.from_cache} from cache, {spent}, {self.over_budget} over "
            f"budget (max_validations_per_run {budget}), {self.unavailable} while Mailgun was "
            f"unavailable, {self.rejected} refused by Mailgun; {self.unvalidated_records} "
            "record(s) passed through unvalidated."
        )


class MailgunValidateMapper(InlineMapper):
    """Adds Mailgun's address validation to the records of tap-mailgun."""

    name = "mailgun-validate"
    package_name = "mailgun-brevo-singer"
    message_reader_class = MsgSpecReader
    message_writer_class = MessageWriter

    config_jsonschema = th.PropertiesList(
        *CONNECTION_SETTINGS,
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=DEFAULT_MAX_RETRIES,
            description="Retries of a validation after 429, 5xx or a connection error.",
        ),
        th.Property(
            "validation_cache",
            th.StringType,
            secret=True,
            description="Where verdicts are kept between runs: a file path (SQLite) or an "
            "SQLAlchemy URL. Default: .meltano/mailgun-validate/validations.sqlite.",
        ),
        th.Property(
            "validation_ttl_days",
            th.NumberType(minimum=0),
            default=DEFAULT_TTL_DAYS,
            description="A cached verdict is reused until this many days old.",
        ),
        th.Property(
            "max_validations_per_run",
            th.IntegerType(minimum=0),
            default=DEFAULT_MAX_VALIDATIONS,
            description="Billed validations one run may make; further records pass through "
            "unvalidated (validated by later runs).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Validate nothing, cache nothing; count what would be billed.",
        ),
        th.Property(
            "address_fields",
            th.ObjectType(additional_properties=True),
            description="Property holding the address, per stream, merged over the defaults "
            "(events and webhook_events: recipient; bounces, complaints, unsubscribes, "
            "list_members: address); null: the stream is not validated.",
        ),
    ).to_dict()

    @cached_property
    def address_fields(self) -> dict[str, str | None]:
        """Per stream, the property that holds the address (None: not validated)."""
        return {**DEFAULT_ADDRESS_FIELDS, **(self.config.get("address_fields") or {})}

    @cached_property
    def cache(self) -> ValidationCache:
        """The on-disk verdicts."""
        return ValidationCache(self.config.get("validation_cache"))

    @cached_property
    def client(self) -> ValidationClient:
        """Mailgun's validation endpoint."""
        return ValidationClient(dict(self.config))

    @cached_property
    def tally(self) -> Tally:
        """What this run did."""
        return Tally()

    @cached_property
    def seen(self) -> dict[str, dict[str, Any] | None]:
        """This run's verdict per address (None: not validated in this run)."""
        return {}

    _unavailable: str | None = None  # why Mailgun is given up on for the rest of the run

    # --- the Singer messages --------------------------------------------------------------
    @override
    def map_schema_message(self, message_dict: dict[str, Any]) -> Iterable[Message]:
        """The schema, with `validation` on the streams that carry an address."""
        schema = message_dict["schema"]
        if self.address_fields.get(message_dict["stream"]):
            schema = with_validation(schema)
        yield SchemaMessage(
            stream=message_dict["stream"],
            schema=schema,
            key_properties=message_dict.get("key_properties"),
            bookmark_properties=message_dict.get("bookmark_properties"),
        )

    @override
    def map_record_message(self, message_dict: dict[str, Any]) -> Iterable[Message]:
        """The record, with `validation` when it carries an address."""
        record = message_dict["record"]
        address = address_of(record, self.address_fields.get(message_dict["stream"]))
        if address is not None:
            record["validation"] = self.verdict(address)
            self.tally.records += 1
            self.tally.unvalidated_records += record["validation"] is None
        yield RecordMessage.from_dict(message_dict)

    @override
    def map_state_message(self, message_dict: dict[str, Any]) -> Iterable[Message]:
        """The state, once the verdicts of the records before it are durable."""
        if not self.config.get("dry_run"):
            self.cache.commit()
        yield StateMessage(value=message_dict["value"])

    @override
    def map_activate_version_message(self, message_dict: dict[str, Any]) -> Iterable[Message]:
        """Passed on as it is."""
        yield ActivateVersionMessage(stream=message_dict["stream"], version=message_dict["version"])

    @override
    def process_endofpipe(self) -> None:
        """Keep the verdicts and say what the run spent."""
        if not self.config.get("dry_run"):
            self.cache.commit()
        self.cache.close()
        click.echo(
            self.tally.line(budget=self.budget, dry_run=bool(self.config.get("dry_run"))),
            err=True,
        )

    # --- the verdicts ---------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """max_validations_per_run."""
        return int(self.config.get("max_validations_per_run", DEFAULT_MAX_VALIDATIONS))

    def verdict(self, address: str) -> dict[str, Any] | None:
        """The verdict of `address`: this run's, else a fresh cached one, else Mailgun's
        (within budget and while Mailgun answers); None when none may be had."""
        if address in self.seen:
            return self.seen[address]
        now = time.time()
        cached = self.cache.get(address)
        ttl = float(self.config.get("validation_ttl_days", DEFAULT_TTL_DAYS))
        verdict: dict[str, Any] | None = None
        if cached is not None and is_fresh(cached[1], now, ttl):
            self.tally.from_cache += 1
            verdict = cached[0]
        elif self.config.get("dry_run"):
            self.tally.would_validate += 1
        elif self._unavailable is not None:
            self.tally.unavailable += 1
        elif self.tally.validated >= self.budget:
            if not self.tally.over_budget:
                self.logger.warning(
                    "max_validations_per_run (%d) reached: the rest of this run's addresses "
                    "pass through unvalidated; later runs validate them.",
                    self.budget,
                )
            self.tally.over_budget += 1
        else:
            verdict = self._validate(address, now)
        self.seen[address] = verdict
        return verdict

    def _validate(self, address: str, now: float) -> dict[str, Any] | None:
        """One billed validation, cached; None when Mailgun gives no verdict."""
        try:
            answer = self.client.validate(address)
        except ValidationUnavailableError as exc:
            self._unavailable = str(exc)
            self.tally.unavailable += 1
            self.logger.warning(
                "%s: the rest of this run passes through unvalidated; later runs validate it.",
                exc,
            )
            return None
        except ValidationRejectedError as exc:
            self.tally.rejected += 1
            self.logger.warning("Mailgun would not validate %s: %s", address, exc)
            return None
        self.tally.validated += 1
        stamp = datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="seconds")
        verdict = verdict_of(answer, stamp)
        self.cache.put(address, verdict, now)
        return verdict

    @classmethod
    @override
    def invoke(cls, *args: Any, **kwargs: Any) -> None:
        """Run as the SDK does; a refused key, a cache that cannot work or a setting that does
        not fit its schema ends the run with one line, no traceback."""
        with one_line_errors(
            cls.logger, ValidationRefusedError, SettingError, ConfigValidationError
        ):
            super().invoke(*args, **kwargs)


if __name__ == "__main__":
    MailgunValidateMapper.cli()
