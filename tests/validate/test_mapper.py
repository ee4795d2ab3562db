"""The real `mailgun-validate` console script between Singer messages and the fake Mailgun.

Every validation is a real GET /v4/address/validate on loopback, checked against Mailgun's
OpenAPI description; the fake answers the verdicts each test chooses and counts the calls,
which are what Mailgun bills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.mailgun import FakeMailgun
from mailgun_validate.cache import ValidationCache

API_KEY = "key-validate"
MAPPER = Path(sys.executable).with_name("mailgun-validate")
EVENTS_SCHEMA = {
    "type": "SCHEMA",
    "stream": "events",
    "schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    "key_properties": ["id"],
}
DOMAINS_SCHEMA = {
    "type": "SCHEMA",
    "stream": "domains",
    "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
    "key_properties": ["name"],
}


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """A fake Mailgun; every request the mapper sent must satisfy the spec."""
    fake = FakeMailgun(api_key=API_KEY)
    with fake:
        yield fake
    assert fake.violations == []


@dataclass
class Mapped:
    """What one run of the mapper wrote."""

    returncode: int
    messages: list[dict[str, Any]]
    stderr: str

    def records(self, stream: str = "events") -> list[dict[str, Any]]:
        """The records of a stream, in order."""
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    @property
    def summary(self) -> str:
        """The summary line."""
        return next(line for line in self.stderr.splitlines() if "mailgun-validate:" in line)


def event(n: int, recipient: str) -> dict[str, Any]:
    """An events record naming `recipient`."""
    return {"type": "RECORD", "stream": "events", "record": {"id": str(n), "recipient": recipient}}


def run(
    fake: FakeMailgun,
    tmp_path: Path,
    messages: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Mapped:
    """The console script with a config pointing at the fake and a cache in tmp_path (a
    setting given as None is left out of the config)."""
    config = {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "validation_cache": str(tmp_path / "validations.sqlite"),
        "max_retries": 2,
        **settings,
    }
    config = {k: v for k, v in config.items() if v is not None}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    lines = "".join(json.dumps(m) + "\n" for m in messages)
    result = subprocess.run(
        [str(MAPPER), "--config", str(config_file)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    out = [json.loads(line) for line in result.stdout.splitlines() if line]
    return Mapped(result.returncode, out, result.stderr)


def test_records_carry_the_verdict_mailgun_gives_and_schemas_declare_it(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    mailgun.set_verdict(
        "gone@example.com",
        "undeliverable",
        "high",
        reason=["mailbox_does_not_exist"],
        did_you_mean="gone@example.org",
    )
    mailgun.set_verdict("info@example.com", "do_not_send", "high", is_role_address=True)
    messages = [
        EVENTS_SCHEMA,
        DOMAINS_SCHEMA,
        event(1, "Gone@Example.com"),
        event(2, "info@example.com"),
        event(3, "ok@example.com"),
        {"type": "RECORD", "stream": "domains", "record": {"name": "mg.example.com"}},
        {"type": "STATE", "value": {"bookmarks": {"events": {"n": 3}}}},
    ]

    mapped = run(mailgun, tmp_path, messages)

    assert mapped.returncode == 0, mapped.stderr
    schemas = {m["stream"]: m["schema"] for m in mapped.messages if m["type"] == "SCHEMA"}
    assert "validation" in schemas["events"]["properties"]
    assert "validation" not in schemas["domains"]["properties"]
    verdicts = [r["validation"] for r in mapped.records()]
    assert [(v["result"], v["risk"]) for v in verdicts] == [
        ("undeliverable", "high"),
        ("do_not_send", "high"),
        ("deliverable", "low"),
    ]
    assert verdicts[0]["reason"] == ["mailbox_does_not_exist"]
    assert verdicts[0]["did_you_mean"] == "gone@example.org"
    assert verdicts[1]["is_role_address"] is True
    assert verdicts[2]["is_disposable_address"] is False
    assert mapped.records()[0]["recipient"] == "Gone@Example.com"  # the record is not rewritten
    assert mapped.records("domains") == [{"name": "mg.example.com"}]
    assert mapped.messages[-1] == {"type": "STATE", "value": {"bookmarks": {"events": {"n": 3}}}}
    assert "3 validated (billed)" in mapped.summary


def test_an_address_is_billed_once_per_run_and_once_per_ttl_across_runs(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    messages = [EVENTS_SCHEMA, *(event(n, f"p{n % 3}@example.com") for n in range(9))]

    first = run(mailgun, tmp_path, messages)
    assert first.returncode == 0, first.stderr
    assert dict(mailgun.validations) == {f"p{n}@example.com": 1 for n in range(3)}
    assert "3 address(es): 0 from cache, 3 validated (billed)" in first.summary

    second = run(mailgun, tmp_path, messages)
    assert dict(mailgun.validations) == {f"p{n}@example.com": 1 for n in range(3)}
    assert "3 address(es): 3 from cache, 0 validated (billed)" in second.summary
    assert [r["validation"] for r in second.records()] == [r["validation"] for r in first.records()]

    # A verdict older than validation_ttl_days is asked again, once.
    cache = ValidationCache(str(tmp_path / "validations.sqlite"))
    stale = cache.get("p0@example.com")
    assert stale is not None
    cache.put("p0@example.com", stale[0], time.time() - 8 * 86400)
    cache.commit()
    cache.close()
    third = run(mailgun, tmp_path, messages, validation_ttl_days=7)
    assert mailgun.validations["p0@example.com"] == 2
    assert mailgun.validations["p1@example.com"] == 1
    assert "2 from cache, 1 validated (billed)" in third.summary


def test_the_budget_stops_spending_and_the_rest_pass_unvalidated(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    messages = [EVENTS_SCHEMA, *(event(n, f"p{n}@example.com") for n in range(5))]
    messages.append(event(5, "p0@example.com"))

    mapped = run(mailgun, tmp_path, messages, max_validations_per_run=2)

    assert mapped.returncode == 0, mapped.stderr
    assert sum(mailgun.validations.values()) == 2
    verdicts = [r["validation"] for r in mapped.records()]
    assert [v is not None for v in verdicts] == [True, True, False, False, False, True]
    assert "2 validated (billed), 3 over budget (max_validations_per_run 2)" in mapped.summary
    assert "3 record(s) passed through unvalidated" in mapped.summary
    assert "max_validations_per_run (2) reached" in mapped.stderr


def test_429s_are_retried_with_the_wait_mailgun_asks(mailgun: FakeMailgun, tmp_path: Path) -> None:
    mailgun.fail_next(
        r"GET /v4/address/validate", 429, {"message": "slow down"}, {"Retry-After": "1"}, times=2
    )

    started = time.monotonic()
    mapped = run(mailgun, tmp_path, [EVENTS_SCHEMA, event(1, "a@example.com")])

    assert mapped.returncode == 0, mapped.stderr
    assert mapped.records()[0]["validation"]["result"] == "deliverable"
    assert len(mailgun.calls("GET", "^/v4/address/validate$")) == 3
    assert time.monotonic() - started >= 2.0  # two waits of the second Mailgun asked for


def test_an_outage_never_blocks_the_pipeline(mailgun: FakeMailgun, tmp_path: Path) -> None:
    mailgun.fail_next(
        r"GET /v4/address/validate", 503, {"message": "down"}, {"Retry-After": "0"}, times=100
    )
    messages = [EVENTS_SCHEMA, *(event(n, f"p{n}@example.com") for n in range(4))]
    messages.append({"type": "STATE", "value": {"n": 4}})

    mapped = run(mailgun, tmp_path, messages)

    assert mapped.returncode == 0, mapped.stderr
    assert [r["validation"] for r in mapped.records()] == [None] * 4
    assert mapped.messages[-1] == {"type": "STATE", "value": {"n": 4}}
    # One address tried with its retries; Mailgun is then left alone for the rest of the run.
    assert len(mailgun.calls("GET", "^/v4/address/validate$")) == 3
    assert "4 while Mailgun was unavailable" in mapped.summary
    assert "4 record(s) passed through unvalidated" in mapped.summary


def test_dry_run_spends_nothing_and_counts_what_it_would(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    messages = [EVENTS_SCHEMA, *(event(n, f"p{n % 2}@example.com") for n in range(4))]
    run(mailgun, tmp_path, messages[:2])  # p0 is cached
    messages.append(event(9, "new@example.com"))

    mapped = run(mailgun, tmp_path, messages, dry_run=True)

    assert mapped.returncode == 0, mapped.stderr
    assert dict(mailgun.validations) == {"p0@example.com": 1}
    assert "1 from cache, dry run: 2 validation(s) would be billed, none was" in mapped.summary
    again = run(mailgun, tmp_path, messages, dry_run=True)  # nothing was cached by the dry run
    assert "dry run: 2 validation(s) would be billed" in again.summary


def test_a_refused_key_stops_with_one_line_naming_the_setting(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    mailgun.api_key = "another-key"

    mapped = run(mailgun, tmp_path, [EVENTS_SCHEMA, event(1, "a@example.com")])

    assert mapped.returncode != 0
    assert "Traceback" not in mapped.stderr
    error = mapped.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Mailgun refused the API key (401)")
    assert "api_key" in error
    assert API_KEY not in mapped.stderr


def test_the_default_cache_is_made_in_a_fresh_meltano_project(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    messages = [EVENTS_SCHEMA, event(1, "p1@example.com")]

    mapped = run(
        mailgun, tmp_path, messages, {"MELTANO_PROJECT_ROOT": str(project)}, validation_cache=None
    )

    assert mapped.returncode == 0, mapped.stderr
    cache = ValidationCache(str(project / ".meltano" / "mailgun-validate" / "validations.sqlite"))
    assert cache.get("p1@example.com") is not None
    cache.close()


def test_a_cache_in_a_missing_folder_stops_with_one_line_naming_the_setting(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "validations.sqlite"

    mapped = run(
        mailgun,
        tmp_path,
        [EVENTS_SCHEMA, event(1, "p1@example.com")],
        validation_cache=str(missing),
    )

    assert mapped.returncode == 1
    assert "Traceback" not in mapped.stderr
    assert f"validation_cache: the folder {missing.parent} does not exist" in mapped.stderr
    assert "engagement_store" not in mapped.stderr
    assert not mapped.records()
