"""Receiver -> spool -> tap-mailgun -> target-brevo -> Brevo, every part its real console script.

A hard bounce pushed by Mailgun's webhook ends blocklisted in Brevo; a forged one changes
nothing; the same bounce read again by polling, from the Events API (microseconds) and from
the Logs API (milliseconds), is applied once.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.brevo import FakeBrevo
from fakes.events import DOMAIN, mailgun_event
from fakes.mailgun import FakeMailgun
from fakes.receiver_process import ReceiverProcess
from fakes.tap_catalog import write_catalog
from fakes.webhook_payloads import signed_body
from tests.tap.conftest import API_KEY, TAP, hours_ago
from tests.target.conftest import API_KEY as BREVO_KEY
from tests.target.conftest import TARGET
from tests.webhooks.conftest import post


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """A fake Mailgun with the test's sending domain."""
    fake = FakeMailgun(api_key=API_KEY)
    fake.add_domain(DOMAIN)
    with fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def brevo() -> Iterator[FakeBrevo]:
    """A fresh fake Brevo."""
    fake = FakeBrevo(api_key=BREVO_KEY)
    with fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def receiver(spool_path: Path) -> Iterator[ReceiverProcess]:
    """`tap-mailgun-webhooks` as a subprocess."""
    process = ReceiverProcess(spool_path)
    yield process
    process.stop()


def write_json(path: Path, value: Any) -> Path:
    """`value` as JSON in `path`; `path`."""
    path.write_text(json.dumps(value))
    return path


def tap_settings(path: Path, mailgun: FakeMailgun, receiver: ReceiverProcess, **more: Any) -> Path:
    """The tap's settings file: the fake Mailgun, the test's domain, the receiver's spool, and
    `more`."""
    return write_json(
        path,
        {
            "api_key": API_KEY,
            "base_url": mailgun.base_url,
            "domains": [DOMAIN],
            "webhook_spool_path": str(receiver.spool),
            **more,
        },
    )


def target_settings(path: Path, brevo: FakeBrevo, store: str, **more: Any) -> Path:
    """The target's settings file: the fake Brevo, the engagement store `store`, and `more`."""
    settings = {"api_key": BREVO_KEY, "base_url": brevo.base_url + "/v3", "engagement_store": store}
    return write_json(path, {**settings, **more})


def catalog(tap_config: Path, folder: Path, *streams: str) -> Path:
    """folder/catalog.json: the tap's catalog with only `streams` selected."""
    return write_catalog(TAP, tap_config, folder / "catalog.json", *streams)


def run_pipeline(
    tap_args: list[str], target_config: Path, logs: list[str] | None = None
) -> list[dict[str, Any]]:
    """`tap-mailgun ... | target-brevo ...`, a real pipe, both exiting 0; returns the target's
    STATE values (and appends its log to `logs`)."""
    # The tap's log goes to a file: a pipe nobody reads until the end fills (64 KB of log
    # lines) and blocks the tap, and with it the whole pipeline.
    with tempfile.TemporaryFile() as tap_log:
        tap = subprocess.Popen([str(TAP), *tap_args], stdout=subprocess.PIPE, stderr=tap_log)
        target = subprocess.Popen(
            [TARGET, "--config", str(target_config)],
            stdin=tap.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tap.stdout is not None
        tap.stdout.close()  # the target owns the read end now
        out, err = target.communicate(timeout=120)
        tap_log.seek(0)
        assert tap.wait(timeout=60) == 0, tap_log.read().decode()[-3000:]
    assert target.returncode == 0, err
    if logs is not None:
        logs.append(err)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_webhook_hard_bounce_is_blocklisted_in_brevo_once(
    receiver: ReceiverProcess,
    mailgun: FakeMailgun,
    brevo: FakeBrevo,
    tmp_path: Path,
) -> None:
    when = hours_ago(2)
    bounce = mailgun_event("failed", when, recipient="gone@example.org", event_id="bounce-1")
    assert post(receiver.url, signed_body(bounce)).status_code == 200
    delivered = mailgun_event("delivered", recipient="ok@example.org", timestamp=when + 1)
    assert post(receiver.url, signed_body(delivered)).status_code == 200
    forged = mailgun_event("failed", when + 2, recipient="victim@example.org")
    assert post(receiver.url, signed_body(forged, key="stolen-guess")).status_code == 401
    # Polling finds the same bounce later: same id, same timestamp.
    mailgun.add_events(
        DOMAIN, [mailgun_event("failed", when, recipient="gone@example.org", event_id="bounce-1")]
    )

    tap_config = tap_settings(tmp_path / "tap.json", mailgun, receiver)
    target_config = target_settings(
        tmp_path / "target.json", brevo, str(tmp_path / "engagement.sqlite")
    )

    # 1. The webhook path alone: the bounce is blocklisted within one scheduled run.
    pushed_only = catalog(tap_config, tmp_path / "webhooks", "webhook_events")
    states = run_pipeline(["--config", str(tap_config), "--catalog", str(pushed_only)],
                          target_config)  # fmt: skip
    assert brevo.contacts["gone@example.org"]["emailBlacklisted"] is True
    assert brevo.contacts["ok@example.org"]["emailBlacklisted"] is False
    assert "victim@example.org" not in brevo.contacts
    assert bounce_events(brevo) == 1
    assert states[-1]["bookmarks"]["webhook_events"]["replication_key_value"] == 2
    sent_events = list(brevo.events)

    # 2. The next run also polls the Events API, and finds the same bounce there: it is
    # applied once.
    both = catalog(tap_config, tmp_path / "both", "webhook_events", "events")
    state = write_json(tmp_path / "state.json", states[-1])
    events_api = write_json(tmp_path / "events.json", {**json.loads(tap_config.read_text()),
                                                   "event_source": "events"})  # fmt: skip
    later = run_pipeline(
        ["--config", str(events_api), "--catalog", str(both), "--state", str(state)],
        target_config,
    )
    assert mailgun.calls("GET", f"/v3/{DOMAIN}/events")  # it did poll
    assert later[-1]["bookmarks"]["webhook_events"]["replication_key_value"] == 2
    assert bounce_events(brevo) == 1
    assert brevo.events == sent_events
    assert brevo.contacts["gone@example.org"]["emailBlacklisted"] is True

    # 3. Another reads the Logs API from scratch: the bounce comes once more, to the
    # millisecond (its webhook and Events API copies have microseconds); applied once still.
    logs = run_pipeline(
        ["--config", str(tap_config), "--catalog", str(both), "--state", str(state)],
        target_config,
    )
    assert mailgun.calls("POST", "/v1/analytics/logs")
    (domain,) = logs[-1]["bookmarks"]["events"]["partitions"]
    assert domain["replication_key_value"].endswith("000+00:00")  # the Logs API's copy
    assert bounce_events(brevo) == 1
    assert brevo.events == sent_events


def bounce_events(brevo: FakeBrevo) -> int:
    """How many events Brevo holds for the Mailgun event `bounce-1`."""
    return sum(e["event_properties"].get("mailgun_event_id") == "bounce-1" for e in brevo.events)
