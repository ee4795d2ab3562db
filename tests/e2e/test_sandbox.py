"""The sandbox's own rules: its clock, what it keeps between runs, and the summary it prints."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from fakes.sandbox import (
    BREVO_LISTS,
    DAY,
    MAILGUN_KEY,
    ROOT,
    SEED,
    STATE_ID,
    WINDOW_DAYS,
    Clock,
    Sandbox,
    fetch_state,
    port_is_free,
    reset,
    summarize,
    table,
    what_happened,
)
from fakes.traffic import DEFAULT_DOMAINS
from tests.e2e.conftest import MESSAGES_PER_DAY, RECIPIENTS

if TYPE_CHECKING:
    from tests.e2e.conftest import Meltano

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
MIDNIGHT = datetime(2026, 11, 20, tzinfo=timezone.utc)


def test_the_first_clock_shows_29_days_of_a_world_that_ended_at_least_an_hour_ago() -> None:
    clock = Clock.first(NOON)
    assert clock.end == MIDNIGHT
    assert clock.start == MIDNIGHT - timedelta(days=WINDOW_DAYS)
    assert clock.now == clock.start + timedelta(days=29)
    # Twenty minutes past midnight, today's midnight is not an hour old yet: yesterday's is.
    assert Clock.first(MIDNIGHT + timedelta(minutes=20)).end == MIDNIGHT - DAY
    assert Clock.first(MIDNIGHT + timedelta(minutes=60)).end == MIDNIGHT


@pytest.mark.parametrize("minutes_past_midnight", [0, 20, 60, 12 * 60, 23 * 60 + 59])
def test_every_run_moves_a_whole_day_whatever_the_hour(minutes_past_midnight: int) -> None:
    real_now = MIDNIGHT + timedelta(minutes=minutes_past_midnight)
    clock = Clock.first(real_now)
    for _ in range(WINDOW_DAYS - 29):  # even all on the same real day
        later = clock.advanced(real_now)
        assert later.now - clock.now == DAY
        assert later.now <= real_now - timedelta(hours=1)
        clock = later
    assert clock.now == clock.end
    assert clock.advanced(real_now) == clock, "the world's end: no further"
    assert Clock.from_json(clock.to_json()) == clock


def test_a_clock_saved_by_an_older_sandbox_still_never_moves_into_the_last_hour() -> None:
    # Older sandboxes placed the world's end 30 days ahead of their first start.
    old = Clock(SEED, MIDNIGHT - timedelta(days=30), NOON - timedelta(hours=3))
    assert old.advanced(NOON).now == NOON - timedelta(hours=1)
    assert old.advanced(NOON - timedelta(days=1)).now == old.now, "never backwards"


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

        # A demo on the same folder would overwrite what this sandbox saves: refused.
        clash = subprocess.run(
            [*argv[:3], "demo", "--dir", str(tmp_path), "--meltano", sys.executable],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert clash.returncode != 0
        assert clash.stderr.splitlines() == [
            f"The sandbox in {tmp_path} is in use by process {server.pid} ({' '.join(argv)} "
            "--mailgun-port=0 --brevo-port=0): stop that program (Ctrl-C in its shell), then "
            "run this again."
        ]
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    saved = json.loads((tmp_path / "brevo.json").read_text())
    assert [lst["name"] for lst in saved["lists"].values()] == list(BREVO_LISTS)


def test_what_happened_says_why_mailgun_events_became_fewer_brevo_events() -> None:
    clock = Clock.first(NOON).advanced(NOON)
    events = [
        {"event": "accepted"},
        {"event": "accepted"},
        {"event": "delivered"},
        {"event": "failed", "severity": "permanent"},
        {"event": "failed", "severity": "temporary"},
        {"event": "failed", "severity": "permanent", "reason": "suppress-complaint"},
        {"event": "stored"},
    ]
    before = brevo_state(events=[])
    after = brevo_state(events=[{"event_name": "x"}] * 4)

    text = what_happened(clock, clock.now - DAY, events, before, after).splitlines()

    assert text[1] == (
        f"- Simulated time: a whole day passed since the last run, {clock.now - DAY:%Y-%m-%d} "
        f"00:00 to {clock.now:%Y-%m-%d} 00:00 UTC (30 more runs bring a new day each)."
    )
    assert text[2] == (
        "- Mailgun: 7 new events in that time (failed 3, accepted 2, delivered 1, stored 1)."
    )
    assert text[3] == (
        "- Brevo events: 4 of them are sent to Brevo as events (email_delivered 1, "
        "email_hard_bounced 1, email_soft_bounced 1, email_suppressed 1); Brevo got 4."
    )
    assert text[4] == (
        "  The other 3 (accepted 2, stored 1) are not sent: Brevo's events API has no such "
        "event (accepted: Mailgun took the message in; stored: Mailgun stored a message); "
        "they still count for their recipient's contact."
    )
    assert '"Mailgun contacts" (list 4) is the list target-brevo imports every one' in text[5]
    fewer = what_happened(clock, clock.now - DAY, events, before, brevo_state(events=[{}]))
    assert "; Brevo got 1: see rows_skipped in the target's summary." in fewer


def test_what_happened_on_a_first_run_and_at_the_worlds_end() -> None:
    first = Clock.first(NOON)
    state = brevo_state()
    text = what_happened(first, None, [], state, state)
    assert (
        f"- Simulated time: this first run shows the first 29 days of the simulated world, "
        f"{first.start:%Y-%m-%d} to {first.now:%Y-%m-%d} 00:00 UTC (31 more runs" in text
    )
    end = first.advanced(NOON, by=timedelta(days=400))
    assert "none passed: all 60 simulated days are shown already" in what_happened(
        end, end.now, [], state, state
    )


def test_a_port_another_program_holds_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port)
        small = {"messages_per_day": 5, "recipients": 20}
        with Sandbox(tmp_path, mailgun_port=port, brevo_port=0, real_now=NOON, **small) as box:
            assert box.mailgun.base_url != f"http://127.0.0.1:{port}"
            assert box.env()["TAP_MAILGUN_BASE_URL"] == box.mailgun.base_url
            assert box.notes == [
                f"Port {port} is taken by another program, so the fake Mailgun listens on "
                f"{box.mailgun.base_url} instead (Meltano is told so)."
            ]
            response = requests.get(
                f"{box.mailgun.base_url}/v4/domains", auth=("api", MAILGUN_KEY), timeout=10
            )
            assert response.status_code == 200
    assert port_is_free(0)


def test_the_demo_command_on_taken_ports_says_what_it_did_moves_a_day_and_reset_forgets(
    meltano: Meltano, tmp_path: Path
) -> None:
    folder = tmp_path / "demo"

    def sandbox(command: str, *options: str) -> str:
        runner = [sys.executable, "-m", "fakes.sandbox", command, "--dir", str(folder)]
        result = subprocess.run(
            [*runner, "--meltano", str(meltano.executable), *options],
            cwd=ROOT,
            env=meltano.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    # Another program holds the usual ports: the demo moves to free ones and tells Meltano.
    with socket.socket() as mailgun_port, socket.socket() as brevo_port:
        for held in (mailgun_port, brevo_port):
            held.bind(("127.0.0.1", 0))
            held.listen()
        taken = [str(held.getsockname()[1]) for held in (mailgun_port, brevo_port)]

        def demo() -> str:
            ports = (f"--mailgun-port={taken[0]}", f"--brevo-port={taken[1]}")
            size = (f"--messages-per-day={MESSAGES_PER_DAY}", f"--recipients={RECIPIENTS}")
            return sandbox("demo", *ports, *size)

        first, second = demo(), demo()
        for output in (first, second):
            lines = output.splitlines()
            assert lines[0].startswith(f"Port {taken[0]} is taken by another program, so the fake")
            assert lines[1].startswith(f"Port {taken[1]} is taken by another program, so the fake")
            assert "Brevo now holds" in output
            assert "email_delivered" in output
            assert "news.example.org: a threshold crossed" in output  # the health report ends it
            assert re.search(r"^Report: \S+mailgun-health\.html$", output, re.MULTILINE)
            assert '"Mailgun contacts" (list 4) is the list target-brevo imports' in output
            sent, got = said(output, r"Brevo events: (\d+) of them .*; Brevo got (\d+)\.")
            assert sent == got == added(output, "events") > 0
            mailgun = said(output, r"Mailgun: (\d+) new events")[0]
            assert mailgun == sent + said(output, r"The other (\d+) \(accepted \d+\) are not")[0]
        assert "this first run shows the first 29 days of the simulated world" in first
        moved = re.search(r"a whole day passed since the last run, (.{16}) to (.{16}) UTC", second)
        assert moved, second
        since, until = (datetime.strptime(t, "%Y-%m-%d %H:%M") for t in moved.groups())
        assert until - since == DAY
        assert added(first, "events") > added(second, "events") > 0
        assert added(second, "contacts ") < added(first, "contacts ")
        assert STATE_ID in meltano("--environment=sandbox", "state", "list").stdout

        sandbox("reset")
        assert not (folder / "brevo.json").exists()
        assert not (folder / "clock.json").exists()
        assert STATE_ID not in meltano("--environment=sandbox", "state", "list").stdout
        again = demo()  # from scratch: everything Brevo holds came in this run
        assert count(again, "events")[0] == count(again, "events")[1] > 0
        assert count(again, "contacts ")[0] == count(again, "contacts ")[1] > 0


def test_reset_on_a_fresh_clone_makes_the_folder_it_logs_to(tmp_path: Path) -> None:
    folder = tmp_path / "no-sandbox-yet"

    assert reset(Path("/bin/true"), folder) == 0  # a Meltano that clears the state, and says so

    assert (folder / "reset.log").exists()


def said(output: str, pattern: str) -> list[int]:
    """The numbers a line of the demo's output gives, by a regex with one group per number."""
    found = re.search(pattern, output)
    assert found, f"{pattern!r} not in:\n{output}"
    return [int(number) for number in found.groups()]


def count(output: str, what: str) -> tuple[int, int]:
    """(total, added this run) from a summary line such as `events  12 (+3 this run)`."""
    line = next(line for line in output.splitlines() if line.startswith(what))
    total, added = line[len(what) :].split("(+")
    return int(total), int(added.split()[0])


def added(output: str, what: str) -> int:
    """How many `what` this run added, from the summary."""
    return count(output, what)[1]
