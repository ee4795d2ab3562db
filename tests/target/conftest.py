"""Fixtures for target-brevo: a fake Brevo per test, the real console script, tap-shaped input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.brevo import FakeBrevo
from target_brevo.store import EngagementStore, store_url

API_KEY = "xkeysib-test"
TARGET = str(Path(sys.executable).with_name("target-brevo"))
BASE_EPOCH = 1_793_534_400.0  # 2026-11-01T12:00:00Z


@pytest.fixture
def brevo() -> Iterator[FakeBrevo]:
    """A fresh fake Brevo on loopback; every request it got must have matched the spec."""
    fake = FakeBrevo(api_key=API_KEY)
    with fake:
        yield fake
    assert fake.violations == []


def at(seconds: float) -> float:
    """The moment `seconds` after BASE_EPOCH: the target tests' events happen around it."""
    return BASE_EPOCH + seconds


SCHEMAS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "events": (
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
                "event": {"type": "string"},
                "recipient": {"type": ["string", "null"]},
            },
            "additionalProperties": True,
        },
        ["id", "timestamp"],
    ),
    "bounces": (
        {
            "type": "object",
            "properties": {"domain": {}, "address": {}},
            "additionalProperties": True,
        },
        ["domain", "address"],
    ),
    "list_members": (
        {
            "type": "object",
            "properties": {"list_address": {}, "address": {}},
            "additionalProperties": True,
        },
        ["list_address", "address"],
    ),
}
SCHEMAS["webhook_events"] = SCHEMAS["events"]
SCHEMAS["complaints"] = SCHEMAS["bounces"]
SCHEMAS["unsubscribes"] = SCHEMAS["bounces"]


def singer_lines(
    streams: dict[str, Iterable[dict[str, Any]]], state: dict[str, Any] | None = None
) -> list[str]:
    """SCHEMA + RECORD lines per stream, then one STATE line (what a tap run looks like)."""
    lines: list[str] = []
    for stream, records in streams.items():
        schema, keys = SCHEMAS.get(stream, ({"type": "object", "properties": {}}, []))
        lines.append(json.dumps({"type": "SCHEMA", "stream": stream, "schema": schema,
                                 "key_properties": keys}))  # fmt: skip
        lines.extend(json.dumps({"type": "RECORD", "stream": stream, "record": r}) for r in records)
    lines.append(json.dumps({"type": "STATE", "value": state or {"bookmarks": {"run": 1}}}))
    return lines


@dataclass
class Run:
    """One run of the real `target-brevo` console script."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def states(self) -> list[dict[str, Any]]:
        """The STATE values the target emitted on stdout."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def summary(self) -> dict[str, Any]:
        """The end-of-run summary the target logged."""
        marker = "target-brevo summary: "
        line = next(x for x in self.stderr.splitlines() if marker in x)
        return dict(json.loads(line.split(marker, 1)[1]))


STORE_KINDS = ("sqlite", "postgresql")
# The tests that say what the store guarantees run on both kinds of store; the rest on SQLite.
on_both_stores = pytest.mark.parametrize("engagement_store", STORE_KINDS, indirect=True)


@pytest.fixture
def engagement_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """This test's `engagement_store` setting: an SQLite file in tmp_path, or, when the test is
    parametrized with "postgresql" (`on_both_stores`), a fresh database on the session's
    real PostgreSQL server."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "engagement.sqlite")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EngagementStore]:
    """A fresh engagement store opened in the test's process: SQLite, then a database on the
    session's PostgreSQL."""
    setting = str(tmp_path / "store.sqlite")
    if request.param == "postgresql":
        setting = request.getfixturevalue("postgres_url")
    opened = EngagementStore(store_url(setting))
    yield opened
    opened.close()


@dataclass
class TargetRunner:
    """Runs the console script against a fake Brevo with a per-test engagement store."""

    fake: FakeBrevo
    tmp: Path
    engagement_store: str = ""

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A config pointing at the fake and the test's store; overrides win."""
        return {
            "api_key": API_KEY,
            "base_url": self.fake.base_url + "/v3",
            "engagement_store": self.engagement_store or str(self.tmp / "engagement.sqlite"),
            **overrides,
        }

    def settings_file(self, **overrides: Any) -> Path:
        """config.json in the test's folder: `config(**overrides)`; its path."""
        path = self.tmp / "config.json"
        path.write_text(json.dumps(self.config(**overrides)))
        return path

    def input_file(self, lines: list[str]) -> Path:
        """input.singer in the test's folder: `lines`; its path."""
        path = self.tmp / "input.singer"
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(self, lines: list[str], *, settle: bool = True, **overrides: Any) -> Run:
        """Feed `lines` to `target-brevo --config ... --input ...` as a subprocess."""
        process = self.start(self.settings_file(**overrides), self.input_file(lines))
        return self.finish(process, settle=settle)

    def start(self, config: Path, data: Path | None = None) -> subprocess.Popen[str]:
        """Start the console script without waiting for it; without `data` it reads its stdin,
        a pipe left open (as from a tap still running)."""
        if data is None:
            command, stdin = [TARGET, "--config", str(config)], subprocess.PIPE
        else:
            command, stdin = [TARGET, "--config", str(config), "--input", str(data)], None
        return subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(self, process: subprocess.Popen[str], *, settle: bool = True) -> Run:
        """Wait for the script and collect its output; then, unless `settle` is false, give
        Brevo the time to finish the imports it accepted (as the 15 minutes to the next run do).
        """
        stdout, stderr = process.communicate(timeout=120)
        if settle:
            self.fake.settle()
        return Run(process.returncode, stdout, stderr)


@pytest.fixture
def target(brevo: FakeBrevo, tmp_path: Path, engagement_store: str) -> TargetRunner:
    """The console script wired to this test's fake Brevo and engagement store."""
    return TargetRunner(brevo, tmp_path, engagement_store)


@pytest.fixture
def in_process_target() -> Iterator[None]:
    """For a test that builds TargetBrevo in its own process: singer-sdk installs SIGINT and
    SIGTERM handlers then, and the test's process gets its own back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
