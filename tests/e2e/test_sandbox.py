"""The sandbox's own rules: its clock, what it keeps between runs, and the summary it prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import requests

from fakes.sandbox import (
    BREVO_LISTS,
    MAILGUN_KEY,
    ROOT,
    WINDOW_DAYS,
    Clock,
    Sandbox,
    fetch_state,
    summarize,
    table,
)
from fakes.traffic import DEFAULT_DOMAINS

if TYPE_CHECKING:
    from pathlib import Path

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
MIDNIGHT = datetime(2026, 11, 20, tzinfo=timezone.utc)


def test_the_first_clock_shows_29_days_up_to_yesterdays_midnight() -> None:
    clock = Clock.first(NOON)
    assert clock.now == MIDNIGHT - timedelta(days=1)
    assert clock.start == MIDNIGHT - timedelta(days=30)
    assert Clock.first(MIDNIGHT + timedelta(minutes=20)) == clock


def test_each_advance_is_a_day_but_never_into_the_last_hour_nor_backwards() -> None:
    clock = Clock.first(NOON)
    assert clock.advanced(NOON).now == MIDNIGHT
    assert clock.advanced(NOON).advanced(NOON).now == NOON - timedelta(hours=1)
    assert clock.advanced(MIDNIGHT - timedelta(days=1, hours=5)).now == clock.now
    far = clock.advanced(NOON + timedelta(days=400), by=timedelta(days=400))
    assert far.now == clock.start + timedelta(days=WINDOW_DAYS)
    assert Clock.from_json(far.to_json()) == far


def test_a_restarted_sandbox_serves_the_same_mailgun_and_the_brevo_it_saved(tmp_path: Path) -> None:
    with Sandbox(tmp_path, mailgun_port=0, brevo_port=0, real_now=NOON) as first:
        events = {d: [e["id"] for e in evs] for d, evs in first.mailgun.events.items()}
        first.brevo.contacts["ada@example.com"] = {
            "id": 7,
            "email": "ada@example.com",
            "attributes": {"MG_OPEN_RATE": 0.5},
            "emailBlacklisted": True,
            "listIds": {1, 3},
        }
        first.brevo.events.append({"event_name": "email_opened"})
        saved = first.brevo.state()
    again = Sandbox(tmp_path, mailgun_port=0, brevo_port=0, real_now=NOON)
    assert again.clock == first.clock
    assert {d: [e["id"] for e in evs] for d, evs in again.mailgun.events.items()} == events
    assert again.brevo.state() == saved
    assert again.brevo.add_list("New") == 4  # ids continue after the saved lists
    later = Sandbox(tmp_path, mailgun_port=0, brevo_port=0, real_now=NOON, advance=True)
    assert later.clock.now > first.clock.now
    for domain, ids in events.items():
        newer = [e["id"] for e in later.mailgun.events[domain]]
        assert set(ids) < set(newer)
    assert first.violations() == []


def brevo_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "contacts": {
            "ada@example.com": {
                "email": "ada@example.com",
                "attributes": {"FIRSTNAME": "Ada", "MG_OPEN_RATE": 0.5, "MG_ENGAGEMENT": 40.0},
                "emailBlacklisted": False,
                "listIds": [1, 4],
            },
            "bob@example.com": {
                "email": "bob@example.com",
                "attributes": {"MG_BOUNCE_TYPE": "hard_bounce"},
                "emailBlacklisted": True,
                "listIds": [2, 4],
            },
            "cy@example.com": {
                "email": "cy@example.com",
                "attributes": {"FIRSTNAME": "Cy"},
                "emailBlacklisted": False,
                "listIds": [4],
            },
        },
        "lists": {
            "1": {"id": 1, "name": "Engaged"},
            "2": {"id": 2, "name": "Bounced"},
            "4": {"id": 4, "name": "Mailgun contacts"},
        },
        "events": [
            {"event_name": "email_opened"},
            {"event_name": "email_opened"},
            {"event_name": "email_hard_bounced"},
        ],
    }
    state.update(changes)
    return state


def test_the_summary_shows_contacts_lists_blocklist_and_events() -> None:
    text = summarize(brevo_state())
    lines = text.splitlines()
    assert "contacts                      3" in lines
    assert "contacts with MG_ attributes  2" in lines
    assert "blocklisted contacts          1" in lines
    assert "events                        3" in lines
    assert any(line.split() == ["4", "Mailgun", "contacts", "3"] for line in lines)
    assert any(line.split() == ["1", "Engaged", "1"] for line in lines)
    assert any(line.split() == ["email_opened", "2"] for line in lines)
    assert "Contacts with MG_ attributes (first 2 of 2):" in lines
    header = next(line for line in lines if line.startswith("email "))
    assert header.split() == [
        "email",
        "blocklisted",
        "lists",
        "MG_OPEN_RATE",
        "MG_ENGAGEMENT",
        "MG_BOUNCE_TYPE",
    ]
    assert any(line.split() == ["bob@example.com", "yes", "2,4", "hard_bounce"] for line in lines)
    assert "cy@example.com" not in text


def test_the_summary_says_what_this_run_added() -> None:
    before = brevo_state(events=[{"event_name": "email_opened"}])
    del before["contacts"]["cy@example.com"]
    text = summarize(brevo_state(), before)
    assert "contacts                      3 (+1 this run)" in text
    assert "events                        3 (+2 this run)" in text
    assert "blocklisted contacts          1 (+0 this run)" in text


def test_tables_align_and_say_when_they_are_empty() -> None:
    assert table(["a", "bb"], [["xxx", 1], ["y", None]]).splitlines() == [
        "a    bb",
        "---  --",
        "xxx  1",
        "y",
    ]
    assert table(["event name", "count"], []).splitlines()[-1] == "(none)"


def test_serve_keeps_the_fakes_up_and_saves_brevo_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "fakes.sandbox", "serve", "--dir", str(tmp_path)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*argv, "--mailgun-port=0", "--brevo-port=0"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops the sandbox." not in log.read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        printed = log.read_text()
        brevo = re.search(r"Brevo state:\s+(http://\S+)/_fake/state", printed)
        mailgun = re.search(r"export TAP_MAILGUN_BASE_URL=(\S+)", printed)
        assert brevo and mailgun
        assert summarize(fetch_state(brevo.group(1))).startswith("Brevo now holds")
        domains = requests.get(
            f"{mailgun.group(1)}/v4/domains", auth=("api", MAILGUN_KEY), timeout=10
        )
        assert {d["name"] for d in domains.json()["items"]} == set(DEFAULT_DOMAINS)
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    saved = json.loads((tmp_path / "brevo.json").read_text())
    assert [lst["name"] for lst in saved["lists"].values()] == list(BREVO_LISTS)
