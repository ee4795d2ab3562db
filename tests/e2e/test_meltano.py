"""Meltano itself, as a subprocess, running this project's meltano.yml against the sandbox.

What a user relies on: the environment variables they already export reach the settings, the
schedule is there, `meltano run tap-mailgun target-brevo` brings Mailgun's activity into Brevo
exactly once across runs (state in Meltano's system database), and the tap's output is plain
Singer that a third-party target from PyPI can write.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
import requests

from fakes.events import mailgun_event
from fakes.receiver_process import ReceiverProcess
from fakes.sandbox import ROOT, STATE_ID
from fakes.webhook_payloads import SIGNING_KEY, signed_body
from mailgun_webhooks.register import EVENT_TYPES as REGISTERED_EVENT_TYPES
from tests.e2e.expected import brevo_events, expected_brevo_events, mailgun_events, suppressed

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Meltano, Sandboxes

RUN_BREVO = ("--environment=sandbox", "run", "tap-mailgun", "target-brevo")


def test_familiar_environment_variables_configure_the_dev_environment(meltano: Meltano) -> None:
    exported = {
        "MAILGUN_API_KEY": "key-0123456789abcdef",
        "MAILGUN_DOMAIN": "mg.shop.example",
        "BREVO_API_KEY": "xkeysib-0123456789",
        "MAILGUN_WEBHOOK_SIGNING_KEY": "whsec-0123",
    }
    shown = {
        plugin: json.loads(
            meltano("--environment=dev", "config", "print", plugin, env=exported).stdout
        )
        for plugin in ("tap-mailgun", "target-brevo", "tap-mailgun-webhooks")
    }
    assert shown["tap-mailgun"]["domains"] == ["mg.shop.example"]
    # Secrets are declared sensitive: redacted unless asked for.
    assert shown["tap-mailgun"]["api_key"] != exported["MAILGUN_API_KEY"]
    assert shown["target-brevo"]["api_key"] != exported["BREVO_API_KEY"]
    printed = json.dumps(shown)
    secrets = [v for k, v in exported.items() if k != "MAILGUN_DOMAIN"]
    assert not any(secret in printed for secret in secrets)

    unsafe = {
        plugin: json.loads(
            meltano("--environment=dev", "config", "--unsafe", "print", plugin, env=exported).stdout
        )
        for plugin in ("tap-mailgun", "target-brevo", "tap-mailgun-webhooks")
    }
    assert unsafe["tap-mailgun"]["api_key"] == exported["MAILGUN_API_KEY"]
    assert unsafe["target-brevo"]["api_key"] == exported["BREVO_API_KEY"]
    assert unsafe["tap-mailgun-webhooks"]["signing_key"] == exported["MAILGUN_WEBHOOK_SIGNING_KEY"]


def test_the_job_is_scheduled_every_15_minutes_and_the_fast_lane_every_minute(
    meltano: Meltano,
) -> None:
    schedules = json.loads(meltano("schedule", "list", "--format=json").stdout)
    jobs = {s["name"]: s for s in schedules["schedules"]["job"]}
    assert set(jobs) == {"mailgun-to-brevo-every-15-minutes", "mailgun-fastlane-every-minute"}
    full, fast = jobs["mailgun-to-brevo-every-15-minutes"], jobs["mailgun-fastlane-every-minute"]
    assert full["cron_interval"] == "*/15 * * * *"
    assert full["job"]["tasks"] == ["tap-mailgun target-brevo"]
    assert fast["cron_interval"] == "* * * * *"
    assert fast["job"]["tasks"] == ["tap-mailgun--fastlane target-brevo--fastlane"]


def test_mailgun_reaches_brevo_once_across_incremental_runs(
    meltano: Meltano, sandboxes: Sandboxes
) -> None:
    box = sandboxes.start()
    meltano(*RUN_BREVO, env=box.env())

    assert brevo_events(box) == expected_brevo_events(box)
    recipients = {event["recipient"] for event in mailgun_events(box)}
    members = {m for list_members in box.mailgun.members.values() for m in list_members}
    assert set(box.brevo.contacts) == recipients | members
    blocked = {email for email, c in box.brevo.contacts.items() if c["emailBlacklisted"]}
    suppressions = [suppressed(box, kind) for kind in ("bounces", "complaints", "unsubscribes")]
    # Mailgun's suppression lists all end up blocklisted; anyone else blocklisted had at least
    # a permanent failure (a hard bounce, or Mailgun declining an unsubscribed address).
    failed_for_good = {
        e["recipient"]
        for e in mailgun_events(box)
        if e["event"] == "failed" and e["severity"] == "permanent"
    }
    assert set.union(*suppressions) <= blocked <= set.union(*suppressions, failed_for_good)
    complained_list = {e for e, c in box.brevo.contacts.items() if 3 in c["listIds"]}
    assert complained_list == suppressions[1]
    for member in box.mailgun.members["customers@mg.example.com"].values():
        attributes = box.brevo.contacts[member["address"]]["attributes"]
        assert attributes["FIRSTNAME"] == member["vars"]["first_name"]
        assert any(name.startswith("MG_") for name in attributes)
    state = json.loads(meltano("--environment=sandbox", "state", "get", STATE_ID).stdout)
    assert "events" in state["singer_state"]["bookmarks"]

    # A simulated day later: the sandbox restarts with more traffic and the Brevo it saved.
    cut = box.clock.now
    box.stop()
    later = sandboxes.start(advance=True)
    assert later.clock.now > cut
    assert len(later.brevo.events) == len(box.brevo.events)
    meltano(*RUN_BREVO, env=later.env())

    sent = [
        event
        for call in later.brevo.calls("POST", r"^/v3/events/batch$")
        for event in call.json()["events"]
    ]
    assert sent, "the new day's events must reach Brevo"
    assert min(datetime.fromisoformat(e["event_date"]) for e in sent) >= cut
    assert brevo_events(later) == expected_brevo_events(later)

    # Nothing new: not one write to Brevo, which ends exactly as it was.
    before = later.brevo.state()
    writes = len(later.brevo.calls("POST"))
    meltano(*RUN_BREVO, env=later.env())
    assert len(later.brevo.calls("POST")) == writes
    assert later.brevo.state()["contacts"] == before["contacts"]
    assert later.brevo.state()["events"] == before["events"]


def test_meltanos_state_in_postgresql_carries_the_next_run_on(
    meltano: Meltano, sandboxes: Sandboxes, postgres_url: str, tmp_path: Path
) -> None:
    """Meltano's system database, so its state, on a real PostgreSQL server (as several
    machines share it): the next run resumes from the state the first one stored there."""
    shared = {
        "MELTANO_DATABASE_URI": postgres_url.replace("postgresql://", "postgresql+psycopg://")
    }
    box = sandboxes.start()
    meltano(*RUN_BREVO, env={**box.env(), **shared})
    with psycopg.connect(postgres_url) as db:
        stored = db.execute("SELECT partial_state, completed_state FROM state WHERE state_id = %s",
                            (STATE_ID,)).fetchone()  # fmt: skip
    assert stored is not None, "Meltano kept no state in PostgreSQL"
    assert "events" in json.dumps(stored)
    assert not (tmp_path / "meltano.db").exists()  # nothing kept on this machine's disk

    cut = box.clock.now
    box.stop()
    later = sandboxes.start(advance=True)
    meltano(*RUN_BREVO, env={**later.env(), **shared})
    sent = [
        event
        for call in later.brevo.calls("POST", r"^/v3/events/batch$")
        for event in call.json()["events"]
    ]
    assert sent, "the new day's events must reach Brevo"
    assert min(datetime.fromisoformat(e["event_date"]) for e in sent) >= cut  # resumed
    assert brevo_events(later) == expected_brevo_events(later)


def test_a_third_party_target_from_pypi_writes_the_taps_output(
    meltano: Meltano, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    box = sandboxes.start()
    out = tmp_path / "csv"
    env = {**box.env(), "TARGET_CSV_OUTPUT_PATH": str(out)}
    meltano("--environment=sandbox", "run", "tap-mailgun", "target-csv", env=env)

    def rows(stream: str) -> list[dict[str, str]]:
        with (out / f"{stream}.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))

    events = rows("events")
    served = mailgun_events(box)
    assert len(events) == len(served)
    assert {(r["id"], r["event"]) for r in events} == {(e["id"], e["event"]) for e in served}
    assert {r["domain"] for r in events} == set(box.mailgun.domains)
    assert all(r["timestamp"].endswith("+00:00") for r in events)
    assert {r["address"] for r in rows("bounces")} == suppressed(box, "bounces")
    members = rows("list_members")
    assert len(members) == sum(len(m) for m in box.mailgun.members.values())
    assert {r["list_address"] for r in members} == set(box.mailgun.lists)


def test_the_webhook_receiver_runs_under_meltano_and_feeds_the_job(
    meltano: Meltano, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    box = sandboxes.start()
    spool = tmp_path / "webhooks.sqlite"
    # Set as Meltano's own setting: the receiver sees MAILGUN_WEBHOOK_SIGNING_KEY only because
    # meltano.yml declares `env: MAILGUN_WEBHOOK_SIGNING_KEY` for it.
    receiver_env = {
        **meltano.env,
        "TAP_MAILGUN_WEBHOOKS_SIGNING_KEY": SIGNING_KEY,
        "TAP_MAILGUN_WEBHOOKS_PORT": "0",
        "TAP_MAILGUN_WEBHOOKS_SPOOL_PATH": str(spool),
    }
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        receiver = subprocess.Popen(
            [str(meltano.executable), "invoke", "tap-mailgun-webhooks:serve"],
            cwd=ROOT,
            env=receiver_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: meltano and the receiver stop together
        )
    try:
        url = _wait_for_url(log, receiver)
        bounce = mailgun_event("failed", time.time() - 60, recipient="new.person@example.com")
        headers = {"Content-Type": "application/json"}
        forged = requests.post(
            url, data=signed_body(bounce, key="not-the-key"), headers=headers, timeout=30
        )
        assert forged.status_code == 401
        stored = requests.post(url, data=signed_body(bounce), headers=headers, timeout=30)
        assert stored.status_code == 200
    finally:
        os.killpg(receiver.pid, signal.SIGTERM)
        receiver.wait(timeout=60)
    assert SIGNING_KEY not in log.read_text()

    job_env = {**box.env(), "TAP_MAILGUN_WEBHOOK_SPOOL_PATH": str(spool)}
    assert job_env["TAP_MAILGUN_START_DATE"]  # start_date must not stand in for the sequence
    meltano(*RUN_BREVO, env=job_env)
    assert box.brevo.contacts["new.person@example.com"]["emailBlacklisted"]
    assert [
        e["event_name"]
        for e in box.brevo.events
        if e["identifiers"]["email_id"] == "new.person@example.com"
    ] == ["email_hard_bounced"]


def _wait_for_url(log: Path, process: subprocess.Popen[bytes]) -> str:
    """The receiver's URL, once it logs that it listens (it picks a free port)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+/webhooks/mailgun)", log.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"the receiver exited {process.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"the receiver did not start:\n{log.read_text()}")


def test_the_register_command_registers_the_receiver_on_every_domain(
    meltano: Meltano, sandboxes: Sandboxes
) -> None:
    box = sandboxes.start()
    env = {**meltano.env, "TAP_MAILGUN_WEBHOOKS_BASE_URL": box.mailgun.base_url}
    register = ("--environment=sandbox", "invoke", "tap-mailgun-webhooks:register")
    dry = meltano(*register, "--dry-run", env=env)
    domains = sorted(box.mailgun.domains)
    assert [line.split(":")[0] for line in dry.stdout.splitlines()[:-1]] == domains
    assert not any(box.mailgun.webhooks[d] for d in domains)  # a dry run changes nothing

    meltano(*register, env=env)
    public_url = "http://127.0.0.1:8080/webhooks/mailgun"  # the sandbox's public_url
    for domain in domains:
        hooks = box.mailgun.webhooks[domain]
        assert sorted(hooks) == sorted(REGISTERED_EVENT_TYPES), domain
        assert all(urls == [public_url] for urls in hooks.values())
    assert "key-sandbox" not in "\n".join(log.read_text() for log in meltano.runs)


def test_the_fast_lane_blocklists_a_webhook_bounce_and_the_15_minute_job_sends_nothing_twice(
    meltano: Meltano, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    box = sandboxes.start()
    spool = tmp_path / "spool" / "webhooks.sqlite"
    receiver = ReceiverProcess(spool)
    try:
        bounce = mailgun_event("failed", time.time() - 60, recipient="fast.bounce@example.com")
        opened = mailgun_event("opened", time.time() - 50, recipient="fast.open@example.com")
        for event in (bounce, opened):
            answer = requests.post(
                receiver.url, data=signed_body(event),
                headers={"Content-Type": "application/json"}, timeout=30,
            )  # fmt: skip
            assert answer.status_code == 200
    finally:
        receiver.stop()
    env = {**box.env(), "TAP_MAILGUN_WEBHOOK_SPOOL_PATH": str(spool)}

    meltano("--environment=sandbox", "run", "mailgun-fastlane", env=env)
    assert box.brevo.contacts["fast.bounce@example.com"]["emailBlacklisted"] is True
    assert "fast.open@example.com" not in box.brevo.contacts  # left to the 15-minute job
    states = meltano("--environment=sandbox", "state", "list", env=env).stdout.split()
    assert "sandbox:tap-mailgun--fastlane-to-target-brevo--fastlane" in states

    meltano(*RUN_BREVO, env=env)
    about = {"fast.bounce@example.com": [], "fast.open@example.com": []}
    for event in box.brevo.events:
        about.get(event["identifiers"]["email_id"], []).append(event["event_name"])
    assert about == {
        "fast.bounce@example.com": ["email_hard_bounced"],
        "fast.open@example.com": ["email_opened"],
    }
    assert box.brevo.contacts["fast.bounce@example.com"]["emailBlacklisted"] is True
