"""Fixtures of the tap tests: a fake Mailgun on loopback, and ways to run the tap against it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fakes.mailgun import FakeMailgun
from fakes.tap_catalog import select_only
from tap_mailgun.tap import TapMailgun

API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.com"
OTHER_DOMAIN = "mg.example.org"
TAP = Path(sys.executable).with_name("tap-mailgun")


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """A fake Mailgun with two domains; every request the tap sent must satisfy the spec."""
    fake = FakeMailgun(api_key=API_KEY)
    fake.add_domain(DOMAIN)
    fake.add_domain(OTHER_DOMAIN)
    with fake:
        yield fake
    assert fake.violations == []


def tap_config(fake: FakeMailgun, **overrides: Any) -> dict[str, Any]:
    """A config pointing the tap at the fake, retrying quickly."""
    config: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "domains": [DOMAIN, OTHER_DOMAIN],
        "max_retries": 2,
    }
    config.update(overrides)
    return config


@dataclass
class Run:
    """What one sync emitted."""

    messages: list[dict[str, Any]]
    stderr: str
    tap: TapMailgun
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        for message in self.messages:
            if message["type"] == "RECORD":
                self.records[message["stream"]].append(message["record"])

    @property
    def failures(self) -> list[str]:
        """The partitions that failed, one line each, as the tap reports them."""
        return self.tap.report.failures

    @property
    def state(self) -> dict[str, Any]:
        """The last STATE message's value."""
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return states[-1] if states else {}

    def states(self) -> list[dict[str, Any]]:
        """Every STATE value, in order."""
        return [m["value"] for m in self.messages if m["type"] == "STATE"]


def run_tap(config: dict[str, Any], *streams: str, state: dict[str, Any] | None = None) -> Run:
    """Sync in-process, with only `streams` selected (all when none are named)."""
    catalog = None
    if streams:
        catalog = select_only(TapMailgun(config=config).catalog.to_dict(), *streams)
    tap = TapMailgun(config=config, state=state, catalog=catalog)
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        tap.sync_all()
    out.flush()
    out.seek(0)
    messages = [json.loads(line) for line in out.read().splitlines() if line]
    return Run(messages, err.getvalue(), tap)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console script, as Meltano runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_MAILGUN_")}
    return subprocess.run(
        [str(TAP), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def hours_ago(hours: float) -> float:
    """An epoch timestamp `hours` ago, with sub-microsecond digits like Mailgun's."""
    return time.time() - hours * 3600 + 0.0000004
