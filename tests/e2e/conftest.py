"""End-to-end fixtures: Meltano itself, run as a subprocess, against the sandbox's fakes.

Meltano and the plugins' venvs are installed once per session by `make meltano` (the Makefile
owns that). Each test gets its own Meltano system database (so its own state), its own
sandbox folder and fakes on free ports; nothing touches the developer's .meltano/meltano.db or
.sandbox/.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes.sandbox import ROOT, Sandbox

# The sandbox's clock starts from this moment, so every run of the tests sees the same traffic.
REAL_NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
# A smaller business than the demo's (150 a day to 400 people): every kind of event and
# suppression still shows up, and a Meltano run takes a few seconds.
MESSAGES_PER_DAY = 40
RECIPIENTS = 150
# Variables from the developer's shell that would change what Meltano configures.
_FOREIGN = ("TAP_MAILGUN_", "TARGET_BREVO_", "TARGET_CSV_", "MAILGUN_", "BREVO_", "MELTANO_")


@pytest.fixture(scope="session")
def meltano_bin() -> Path:
    """The meltano executable, with every plugin of meltano.yml installed."""
    result = subprocess.run(["make", "-s", "meltano"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"`make meltano` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return ROOT / ".venv-meltano" / "bin" / "meltano"


@dataclass
class Meltano:
    """Runs `meltano` in a project (this repository's unless `cwd` says) with an isolated
    system database."""

    executable: Path
    env: dict[str, str]
    logs: Path
    cwd: Path = ROOT
    runs: list[Path] = field(default_factory=list)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one meltano command; on failure (with check) show the tail of its output."""
        log = self.logs / f"meltano-{len(self.runs) + 1}.log"
        self.runs.append(log)
        result = subprocess.run(
            [str(self.executable), *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
        )
        log.write_text(f"$ meltano {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        if check and result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            pytest.fail(f"meltano {' '.join(args)} exited {result.returncode}:\n{tail}")
        return result


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The test process's environment without the developer's settings, plus a private state DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env["MELTANO_DATABASE_URI"] = f"sqlite:///{tmp_path / 'meltano.db'}"
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


@pytest.fixture
def meltano(meltano_bin: Path, tmp_path: Path) -> Meltano:
    """Meltano with this test's own system database."""
    return Meltano(meltano_bin, clean_env(tmp_path), tmp_path)


@dataclass
class Sandboxes:
    """Starts sandboxes in one folder (a restart reloads what the last one saved)."""

    directory: Path
    started: list[Sandbox] = field(default_factory=list)

    def start(self, *, advance: bool = False) -> Sandbox:
        """A sandbox on free ports; `advance` moves its clock a simulated day forward."""
        box = Sandbox(
            self.directory,
            mailgun_port=0,
            brevo_port=0,
            advance=advance,
            real_now=REAL_NOW,
            messages_per_day=MESSAGES_PER_DAY,
            recipients=RECIPIENTS,
        )
        self.started.append(box.start())
        return box


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[Sandboxes]:
    """Sandbox factory; every request the fakes received must have passed the official specs."""
    factory = Sandboxes(tmp_path / "sandbox")
    yield factory
    for box in factory.started:
        box.stop()
    for box in factory.started:
        assert box.violations() == []
