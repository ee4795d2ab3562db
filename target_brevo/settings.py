"""target-brevo's settings: the JSON schema users see, and the typed view the code uses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from singer_sdk import typing as th

from plugin_cli import SettingError
from target_brevo.rules import (
    BLOCKLIST_REASONS,
    DEFAULT_EVENT_NAMES,
    DEFAULT_FIELD_MAPPING,
    LIST_ROLES,
    RULES_VERSION,
    is_valid_event_name,
)

DEFAULT_BASE_URL = "https://api.brevo.com/v3"
# A fast-lane run holds the store for under a minute (it follows the spool for 30 s), the
# 15-minute job for minutes: a run finding it held waits this long by default, so the 15-minute
# job never fails on a fast-lane run.
DEFAULT_LOCK_WAIT_SECONDS = 120


class SettingsError(SettingError):
    """A setting of target-brevo that cannot work; the message names it and what is allowed."""


DEFAULT_ALL_LIST_NAME = "Mailgun contacts"

CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property("api_key", th.StringType, required=True, secret=True, description="Brevo API key"),
    th.Property(
        "base_url",
        th.StringType,
        default=DEFAULT_BASE_URL,
        description="Brevo API root; tests and the sandbox point it at a fake on loopback",
    ),
    th.Property(
        "field_mapping",
        th.ObjectType(additional_properties=th.CustomType({"type": ["string", "null"]})),
        default=dict(DEFAULT_FIELD_MAPPING),
        description="Contact field -> Brevo attribute (null: not written); merged over defaults",
    ),
    th.Property(
        "lists",
        th.ObjectType(
            *(th.Property(role, th.IntegerType) for role in (*LIST_ROLES, "all")),
            additional_properties=False,
        ),
        default={},
        description=(
            "Brevo list ids: engaged, bounced, complained (unset: skipped); all: the list every "
            f"contact is imported into (default: a list named '{DEFAULT_ALL_LIST_NAME}')"
        ),
    ),
    th.Property(
        "blocklist_on",
        th.ArrayType(th.StringType(allowed_values=list(BLOCKLIST_REASONS))),
        default=list(BLOCKLIST_REASONS),
        description="What sets emailBlacklisted: hard_bounce, complaint, unsubscribe",
    ),
    th.Property(
        "event_names",
        th.ObjectType(additional_properties=th.StringType),
        default=dict(DEFAULT_EVENT_NAMES),
        description="Mailgun event kind -> Brevo event name; merged over the defaults",
    ),
    th.Property("events_enabled", th.BooleanType, default=True, description="Send Brevo events"),
    th.Property(
        "engagement_store",
        th.StringType,
        secret=True,  # a database URL may carry a password
        description="SQLite file path or SQLAlchemy URL of the engagement store",
    ),
    th.Property(
        "run_lock_lease_seconds",
        th.IntegerType(minimum=2),
        default=300,
        description=(
            "How long a run's lock on the engagement store lasts unrenewed: a live run renews "
            "it every fifth of that; another machine takes over a dead run's store after it"
        ),
    ),
    th.Property(
        "run_lock_wait_seconds",
        th.IntegerType(minimum=0),
        default=DEFAULT_LOCK_WAIT_SECONDS,
        description=(
            "How long a run that finds the engagement store held by another run waits for it "
            "before giving up (failing, or with fast_lane skipping)"
        ),
    ),
    th.Property(
        "fast_lane",
        th.BooleanType,
        default=False,
        description=(
            "Run as the fast lane beside the 15-minute job: apply only events that suppress a "
            "contact, leave the rest and import confirmations to that job, and skip the run "
            "(exit 0, no STATE) when the store stays held"
        ),
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description="Plan everything, send and commit nothing, log the requests it would make",
    ),
    th.Property(
        "validate_records",
        th.BooleanType,
        default=False,
        description=(
            "Full JSON-schema validation of every record (slow); off by default because each "
            "record is checked for what the target uses and skipped with a reason when unfit"
        ),
    ),
).to_dict()


@dataclass(frozen=True)
class Settings:
    """The settings as the code uses them, defaults applied."""

    field_mapping: Mapping[str, str | None]
    lists: Mapping[str, int]
    all_list: int | None
    blocklist_on: frozenset[str]
    event_names: Mapping[str, str] | None  # None when events_enabled is false
    dry_run: bool
    fast_lane: bool = False
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS

    def invalid_event_names(self) -> list[str]:
        """event_names values Brevo would refuse, as `key: value` (each event would be lost)."""
        return [
            f"{key}: {name!r}"
            for key, name in sorted((self.event_names or {}).items())
            if not is_valid_event_name(name)
        ]

    def unknown_names(self) -> list[str]:
        """Keys of field_mapping and event_names the target does not know (typos, usually)."""
        fields = set(self.field_mapping) - set(DEFAULT_FIELD_MAPPING)
        events = set(self.event_names or {}) - set(DEFAULT_EVENT_NAMES)
        return [f"field_mapping.{k}" for k in sorted(fields)] + [
            f"event_names.{k}" for k in sorted(events)
        ]

    def contact_rules_fingerprint(self) -> str:
        """A digest of the settings that decide what a contact looks like in Brevo.

        When it changes (lists, field_mapping, blocklist_on, or the rules themselves:
        RULES_VERSION), contacts Brevo already has are
        out of date too, not only the ones new input touches.
        """
        rules = {
            "field_mapping": dict(sorted(self.field_mapping.items())),
            "lists": dict(sorted(self.lists.items())),
            "all_list": self.all_list,
            "blocklist_on": sorted(self.blocklist_on),
            "rules_version": RULES_VERSION,
        }
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Apply the documented defaults to a validated config."""
        lists = dict(config.get("lists") or {})
        all_list = lists.pop("all", None)
        events_enabled = config.get("events_enabled", True)
        return cls(
            field_mapping={
                # Brevo names attributes in capitals and drops values under any other spelling
                field: attribute.upper() if attribute and field != "email" else attribute
                for field, attribute in {
                    **DEFAULT_FIELD_MAPPING,
                    **(config.get("field_mapping") or {}),
                }.items()
            },
            lists={role: int(i) for role, i in lists.items() if i is not None},
            all_list=int(all_list) if all_list is not None else None,
            blocklist_on=frozenset(config.get("blocklist_on", BLOCKLIST_REASONS)),
            event_names=(
                {**DEFAULT_EVENT_NAMES, **(config.get("event_names") or {})}
                if events_enabled
                else None
            ),
            dry_run=bool(config.get("dry_run", False)),
            fast_lane=bool(config.get("fast_lane", False)),
            lock_wait_seconds=float(config.get("run_lock_wait_seconds", DEFAULT_LOCK_WAIT_SECONDS)),
        )
