"""The fast lane end to end: webhook POST -> receiver -> spool -> `tap-mailgun` (webhook_events
alone, its own state) -> `target-brevo` with `fast_lane` -> Brevo's blocklist; then the
15-minute job over the same spool and Mailgun's Events API, every part its real console script.

What it holds: a hard bounce, a complaint, an unsubscribe and Mailgun declining a suppressed
address are blocklisted by one fast-lane run, anything else is left to the 15-minute job; a
fast-lane run that finds the store held skips cleanly without moving its bookmark, and the next
applies what it skipped; the 15-minute job, reading the same events from the spool and from
polling, applies none of them twice and posts no Brevo event twice. A fast lane that follows the
spool (`webhook_follow_seconds`) blocklists each event while it still runs.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import TYPE_CHECKING, Any

from fakes.events import DOMAIN, mailgun_event
from fakes.webhook_payloads import signed_body
from target_brevo.store import EngagementStore, store_url
from tests.tap.conftest import TAP, hours_ago
from tests.target.conftest import TARGET
from tests.webhooks import test_end_to_end as pipeline
from tests.webhooks.conftest import post
from tests.webhooks.test_end_to_end import (
    catalog,
    run_pipeline,
    tap_settings,
    target_settings,
    write_json,
)

if TYPE_CHECKING:
    from pathlib import Path

    from fakes.brevo import FakeBrevo
    from fakes.mailgun import FakeMailgun
    from fakes.receiver_process import ReceiverProcess

# The fakes and the receiver as a subprocess, as the pipeline test of the webhook path has them.
mailgun, brevo, receiver = pipeline.mailgun, pipeline.brevo, pipeline.receiver
SUMMARY = "target-brevo summary: "


def summary(log: str) -> dict[str, Any]:
    """The target's end-of-run summary in its log."""
    line = next(x for x in log.splitlines() if SUMMARY in x)
    return dict(json.loads(line.split(SUMMARY, 1)[1]))


def sent(fake: FakeBrevo) -> Counter[str]:
    """How many times each Mailgun event reached Brevo's events."""
    return Counter(e["event_properties"]["mailgun_event_id"] for e in fake.events)


def blocklisted(fake: FakeBrevo) -> set[str]:
    """Who Brevo has blocklisted."""
    return {email for email, c in fake.contacts.items() if c["emailBlacklisted"]}


def test_webhook_suppressions_reach_brevo_in_the_fast_lane_once_and_the_full_run_adds_the_rest(
    receiver: ReceiverProcess, mailgun: FakeMailgun, brevo: FakeBrevo, tmp_path: Path
) -> None:
    when = hours_ago(2)
    pushed = [
        mailgun_event("failed", when, recipient="gone@example.org", event_id="hard-1"),
        mailgun_event("complained", when + 1, recipient="angry@example.org", event_id="spam-1"),
        mailgun_event("unsubscribed", when + 2, recipient="bye@example.org", event_id="unsub-1"),
        mailgun_event(
            "failed",
            when + 3,
            recipient="was.bye@example.org",
            event_id="declined-1",
            reason="suppress-unsubscribe",
        ),
        mailgun_event("delivered", when + 4, recipient="ok@example.org", event_id="delivered-1"),
    ]
    for event in pushed:
        assert post(receiver.url, signed_body(event)).status_code == 200
    suppressed = {"gone@example.org", "angry@example.org", "bye@example.org", "was.bye@example.org"}

    tap_config = tap_settings(tmp_path / "tap.json", mailgun, receiver)
    store = str(tmp_path / "engagement.sqlite")
    fast_config = target_settings(
        tmp_path / "fast.json", brevo, store, fast_lane=True, run_lock_wait_seconds=1
    )
    fast_catalog = catalog(tap_config, tmp_path / "fast", "webhook_events")

    def fast_lane(state: dict[str, Any] | None, logs: list[str]) -> list[dict[str, Any]]:
        args = ["--config", str(tap_config), "--catalog", str(fast_catalog)]
        if state is not None:
            args += ["--state", str(write_json(tmp_path / "fast-state.json", state))]
        return run_pipeline(args, fast_config, logs)

    # 1. One fast-lane run: the four suppressions are blocklisted, the delivery is left.
    logs: list[str] = []
    states = fast_lane(None, logs)
    assert blocklisted(brevo) == set(brevo.contacts) == suppressed
    assert sent(brevo) == Counter({"hard-1": 1, "spam-1": 1, "unsub-1": 1, "declined-1": 1})
    assert states[-1]["bookmarks"]["webhook_events"]["replication_key_value"] == 5
    assert summary(logs[-1])["events_left_for_full_run"] == 1

    # 2. The 15-minute job holds the store: the fast lane skips, its bookmark stays put...
    late = mailgun_event("failed", when + 5, recipient="late@example.org", event_id="hard-2")
    assert post(receiver.url, signed_body(late)).status_code == 200
    other = EngagementStore(store_url(store))
    other.lock_run()
    skipped = fast_lane(states[-1], logs)
    other.close()
    assert skipped == []
    assert [line for line in logs[-1].splitlines() if "fast lane skipped" in line]
    assert "late@example.org" not in brevo.contacts
    # ...so the next run reads the bounce again and applies it.
    states = fast_lane(states[-1], logs)
    assert states[-1]["bookmarks"]["webhook_events"]["replication_key_value"] == 6
    assert blocklisted(brevo) == {*suppressed, "late@example.org"}
    assert sent(brevo)["hard-2"] == 1

    # 3. The 15-minute job, with its own state: the whole spool and polling find every event
    # again (the same event, whatever the source); only the delivery is new to the store.
    mailgun.add_events(DOMAIN, [*pushed, late])
    full_config = target_settings(tmp_path / "full.json", brevo, store)
    both = catalog(tap_config, tmp_path / "full", "webhook_events", "events")
    logs = []
    full = run_pipeline(["--config", str(tap_config), "--catalog", str(both)], full_config, logs)
    assert mailgun.calls("POST", "/v1/analytics/logs")  # it did poll (the Logs API)
    assert full[-1]["bookmarks"]["webhook_events"]["replication_key_value"] == 6
    assert sent(brevo) == Counter({e["id"]: 1 for e in [*pushed, late]})
    assert summary(logs[-1])["duplicates_ignored"] == 2 * 6 - 1  # 5 from the spool, 6 polled
    assert brevo.contacts["ok@example.org"]["emailBlacklisted"] is False
    assert blocklisted(brevo) == {*suppressed, "late@example.org"}


def test_a_following_fast_lane_blocklists_each_webhook_while_it_runs(
    receiver: ReceiverProcess, mailgun: FakeMailgun, brevo: FakeBrevo, tmp_path: Path
) -> None:
    tap_config = tap_settings(tmp_path / "tap.json", mailgun, receiver, webhook_follow_seconds=60)
    target_config = target_settings(
        tmp_path / "target.json", brevo, str(tmp_path / "engagement.sqlite"), fast_lane=True
    )
    fast_catalog = catalog(tap_config, tmp_path / "fast", "webhook_events")
    first = mailgun_event("failed", hours_ago(1), recipient="first@example.org")
    assert post(receiver.url, signed_body(first)).status_code == 200
    with (tmp_path / "tap.log").open("wb") as tap_log, (tmp_path / "target.log").open("wb") as log:
        tap = subprocess.Popen(
            [str(TAP), "--config", str(tap_config), "--catalog", str(fast_catalog)],
            stdout=subprocess.PIPE, stderr=tap_log,
        )  # fmt: skip
        target = subprocess.Popen(
            [TARGET, "--config", str(target_config)],
            stdin=tap.stdout, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    assert tap.stdout is not None and target.stdout is not None
    tap.stdout.close()

    def bookmark() -> int:
        """The sequence of the next STATE the target emits (once Brevo has what it covers)."""
        assert target.stdout is not None
        state = json.loads(target.stdout.readline())
        return int(state["bookmarks"]["webhook_events"].get("replication_key_value", 0))

    while bookmark() < 1:
        pass
    assert brevo.contacts["first@example.org"]["emailBlacklisted"] is True
    second = mailgun_event("complained", hours_ago(0.5), recipient="second@example.org")
    assert post(receiver.url, signed_body(second)).status_code == 200
    while bookmark() < 2:
        pass
    assert tap.poll() is None  # still following the spool: applied within the run
    assert brevo.contacts["second@example.org"]["emailBlacklisted"] is True
    target.communicate(timeout=180)
    assert tap.wait(timeout=60) == 0, (tmp_path / "tap.log").read_text()
    assert target.returncode == 0, (tmp_path / "target.log").read_text()
    assert len(brevo.events) == 2
