"""How target-brevo behaves when Brevo pushes back: 429, 5xx, 425, 207, 400, and a crash."""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from fakes.brevo import FakeBrevo
from fakes.events import tap_record
from target_brevo.store import RunLockedError
from target_brevo.target import TargetBrevo, Terminated
from tests.target.conftest import (
    Run,
    TargetRunner,
    at,
    on_both_stores,
    singer_lines,
)

if TYPE_CHECKING:
    from pathlib import Path


def opened_events(count: int) -> list[dict[str, object]]:
    """`count` opened events of distinct contacts (so every one is a Brevo event)."""
    return [
        tap_record(
            "opened", at(i), event_id=f"o{i}", recipient=f"user{i}@example.com", message_id=f"m{i}"
        )
        for i in range(count)
    ]


def sent_ids(fake: FakeBrevo) -> Counter[str]:
    """How many times each Mailgun event reached Brevo."""
    return Counter(e["event_properties"]["mailgun_event_id"] for e in fake.events)


def test_429_waits_for_the_reset_and_retries(brevo: FakeBrevo, target: TargetRunner) -> None:
    limit = {"x-sib-ratelimit-limit": "10", "x-sib-ratelimit-remaining": "0"}
    brevo.fail_next("POST /v3/events/batch", 429, headers={**limit, "x-sib-ratelimit-reset": "1"})
    run = target.run(singer_lines({"events": opened_events(5)}))
    assert run.returncode == 0, run.stderr
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [429, 202]
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(5)})
    assert run.summary["retries"] == 1
    assert run.summary["api_calls"]["POST /events/batch"] == 2


def test_pacing_keeps_within_the_rate_limit(tmp_path: Path) -> None:
    with FakeBrevo(rate_limits={"contacts": (4, 1.0)}) as fake:
        runner = TargetRunner(fake, tmp_path)
        run = runner.run(singer_lines({"events": opened_events(3)}))
        assert run.returncode == 0, run.stderr
        contacts_calls = [r for r in fake.requests if not r.path.startswith("/v3/events")]
        assert len(contacts_calls) > 8  # more calls than one window allows...
        assert 429 not in {r.status for r in fake.requests}  # ...yet never refused
        assert len(fake.contacts) == 3
        assert fake.violations == []


def test_the_final_flush_sends_events_while_it_builds_the_contacts(tmp_path: Path) -> None:
    """At Brevo's pace the events batches left at the end wait for their window: the flush
    sends those that may go while it builds and imports the contacts, not after them all."""
    opened = [tap_record("opened", at(i), recipient=f"o{i}@example.org") for i in range(600)]
    bounced = [
        tap_record("failed", at(i), recipient=f"b{i}@example.org", severity="permanent")
        for i in range(600)
    ]
    with FakeBrevo(rate_limits={"events": (1, 1.0)}) as fake:
        run = TargetRunner(fake, tmp_path).run(singer_lines({"events": opened + bounced}))
        assert run.returncode == 0, run.stderr
        order = [r.path for r in fake.requests]

    imports = [i for i, path in enumerate(order) if path == "/v3/contacts/import"]
    batches = [i for i, path in enumerate(order) if path == "/v3/events/batch"]
    assert len(imports) == 2  # the blocklisted and the others
    assert len(batches) == 6  # never a 429: each waited for its window
    assert batches[0] < imports[0], " ".join(p.rsplit("/", 1)[-1] for p in order)
    assert run.summary["events_sent"] == 1200
    assert fake.violations == []


def test_5xx_and_425_are_retried_with_backoff(brevo: FakeBrevo, target: TargetRunner) -> None:
    brevo.fail_next("POST /v3/contacts/import", 502)
    brevo.fail_next("POST /v3/events/batch", 425)
    brevo.fail_next("GET /v3/contacts/attributes", 503)
    run = target.run(singer_lines({"events": opened_events(3)}))
    assert run.returncode == 0, run.stderr
    assert run.summary["retries"] == 3
    assert len(brevo.contacts) == 3
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})


def test_an_events_batch_brevo_may_have_stored_is_not_resent_in_the_run(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # A 502 from a gateway may come after Brevo stored the batch: a retry could store it twice.
    brevo.fail_next("POST /v3/events/batch", 502, {"message": "Bad gateway"})
    lines = singer_lines({"events": opened_events(3)})
    run = target.run(lines)
    assert run.returncode == 1
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [502]
    assert "answered 502 Bad gateway; Brevo may or may not have stored it" in run.stderr
    assert "they stay pending and go with the next run" in run.stderr
    assert run.states == []
    assert "Traceback" not in run.stderr
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    assert rerun.states == [{"bookmarks": {"run": 1}}]


# The three ways an answer gets lost on the socket, after Brevo acted on the request: a
# Content-Length body cut short, a chunked body cut short, the connection closed unanswered.
CUTS = pytest.mark.parametrize(
    "cut",
    [{}, {"chunked": True}, {"after_headers": False}],
    ids=["content-length-cut", "chunked-cut", "no-answer"],
)


@CUTS
def test_reads_and_imports_whose_answer_is_lost_are_retried(
    brevo: FakeBrevo, target: TargetRunner, cut: dict[str, bool]
) -> None:
    # Imports are upserts and reads change nothing: repeating either is harmless.
    brevo.cut_next("GET /v3/contacts/attributes", **cut)
    brevo.cut_next("POST /v3/contacts/import", **cut)
    run = target.run(singer_lines({"events": opened_events(3)}))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert len(brevo.calls("GET", "/contacts/attributes$")) == 2
    assert len(brevo.calls("POST", "/contacts/import$")) == 2
    assert sorted(brevo.contacts) == [f"user{i}@example.com" for i in range(3)]
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    assert run.summary["retries"] == 2
    assert run.states == [{"bookmarks": {"run": 1}}]


@CUTS
def test_an_events_batch_whose_answer_is_lost_is_not_resent_in_the_run(
    brevo: FakeBrevo, target: TargetRunner, cut: dict[str, bool]
) -> None:
    brevo.cut_next("POST /v3/events/batch", **cut)
    lines = singer_lines({"events": opened_events(3)})
    run = target.run(lines)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "before Brevo's answer was complete; Brevo may or may not have stored it" in run.stderr
    assert len(brevo.calls("POST", "/events/batch$")) == 1
    assert run.states == []
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    # Brevo had stored the batch: the rerun's copy is the one documented duplicate
    assert sent_ids(brevo) == Counter({"o0": 2, "o1": 2, "o2": 2})
    assert rerun.states == [{"bookmarks": {"run": 1}}]


@CUTS
def test_a_create_whose_answer_is_lost_is_looked_up_by_name_not_repeated(
    brevo: FakeBrevo, target: TargetRunner, cut: dict[str, bool]
) -> None:
    brevo.folders.clear()  # an account without folders: the target creates one as well
    brevo.cut_next("POST /v3/contacts/folders", **cut)
    brevo.cut_next("POST /v3/contacts/lists", **cut)
    brevo.cut_next("POST /v3/contacts/attributes/", **cut)  # the first attribute it creates
    first = target.run(singer_lines({"events": opened_events(2)}))
    assert first.returncode == 0, first.stderr
    later = [
        tap_record("opened", at(9), event_id="n1", recipient="new@example.com", message_id="mn")
    ]
    second = target.run(singer_lines({"events": later}))
    assert second.returncode == 0, second.stderr
    assert list(brevo.folders.values()) == ["Mailgun"]
    assert [lst["name"] for lst in brevo.lists.values()] == ["Mailgun contacts"]
    assert len(brevo.calls("POST", "/contacts/(folders|lists)$")) == 2  # each created once
    (everyone,) = brevo.lists
    assert {email: c["listIds"] for email, c in brevo.contacts.items()} == {
        email: {everyone} for email in ("user0@example.com", "user1@example.com", "new@example.com")
    }
    assert "Traceback" not in first.stderr + second.stderr


def refusal(status: int, total: int, refused: dict[int, str]) -> dict[str, object]:
    """Brevo's 207 or 400 body for a batch of `total` events, refusing those at `refused`."""
    errors = [{"eventIndex": [i], "message": why} for i, why in refused.items()]
    return {"status": "partial_success" if status == 207 else "failed", "total_events": total,
            "successful_events": total - len(refused) if status == 207 else 0,
            "failed_events": len(refused), "errors": errors}  # fmt: skip


def test_207_skips_the_refused_events_and_keeps_the_rest(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    events = opened_events(2)
    brevo.fail_next("POST /v3/events/batch", 207, refusal(207, 2, {1: "not today"}))
    run = target.run(singer_lines({"events": events}))
    assert run.returncode == 0, run.stderr
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [207]
    assert run.summary["events_sent"] == 1
    assert run.summary["rows_skipped"] == {"event refused by Brevo: not today": 1}
    assert "Brevo refused event o1" in run.stderr
    # refused rows are not retried forever: the next run has nothing to resend
    again = target.run(singer_lines({"events": events}))
    assert again.returncode == 0
    assert len(brevo.calls("POST", "/events/batch$")) == 1


def test_400_naming_rows_skips_them_and_the_run_goes_on(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    brevo.fail_next("POST /v3/events/batch", 400, refusal(400, 3, dict.fromkeys(range(3), "no")))
    run = target.run(singer_lines({"events": opened_events(3)}))
    assert run.returncode == 0, run.stderr
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [400]
    assert brevo.events == []
    assert run.summary["rows_skipped"] == {"event refused by Brevo: no": 3}
    assert len(brevo.contacts) == 3  # contacts were written all the same
    assert run.states == [{"bookmarks": {"run": 1}}]


def with_subject(event_id: str, recipient: str, subject: str, **extra: object) -> dict[str, object]:
    """An opened event with this subject."""
    headers = {"message-id": f"m-{event_id}", "subject": subject}
    return tap_record(
        "opened",
        at(0),
        event_id=event_id,
        recipient=recipient,
        message={"headers": headers},
        **extra,
    )


def test_an_event_over_brevos_limits_is_trimmed_or_skipped_and_never_blocks_the_run(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    huge = "é" * (5 * 1024 * 1024 // 2)  # a 5 MB subject (2 bytes a character)
    tagged = [f"tag-{i:05d}-{'t' * 20}" for i in range(3000)]  # 90 KB of tags: no text to cut
    events = [
        *opened_events(3),
        with_subject("big", "big@example.com", huge, at=5),
        with_subject("tags", "tags@example.com", "Hi", at=6, tags=tagged),
    ]
    lines = singer_lines({"events": events})
    run = target.run(lines)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.states == [{"bookmarks": {"run": 1}}]
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1, "big": 1})
    (big,) = [e for e in brevo.events if e["event_properties"]["mailgun_event_id"] == "big"]
    assert big["event_properties"]["truncated"] == ["subject"]
    assert huge.startswith(big["event_properties"]["subject"])
    assert len(json.dumps(big["event_properties"])) <= 50 * 1024
    assert "Mailgun event big at" in run.stderr and "sent with subject trimmed" in run.stderr
    assert "Skipped Mailgun event tags at" in run.stderr and "over Brevo's 50 KB" in run.stderr
    assert run.summary["events_trimmed"] == 1
    assert run.summary["rows_skipped"] == {
        "event_properties over Brevo's 50 KB with their text trimmed": 1
    }
    assert len(brevo.contacts) == 5  # both contacts count all the same
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    assert len(brevo.events) == 4  # nothing was left pending, nothing was sent again


def test_a_400_naming_some_events_stores_none_so_the_others_are_resent(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # Brevo's 400 means no event of the batch was stored, even when it names only one.
    errors = [{"eventIndex": [1], "message": "bad o1"}]
    refusal = {"status": "failed", "total_events": 3, "successful_events": 0,
               "failed_events": 3, "errors": errors}  # fmt: skip
    brevo.fail_next("POST /v3/events/batch", 400, refusal)
    run = target.run(singer_lines({"events": opened_events(3)}))
    assert run.returncode == 0, run.stderr
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [400, 202]
    resent = brevo.calls("POST", "/events/batch$")[1].json()["events"]
    assert [e["event_properties"]["mailgun_event_id"] for e in resent] == ["o0", "o2"]
    assert sent_ids(brevo) == Counter({"o0": 1, "o2": 1})
    assert run.summary["events_sent"] == 2
    assert run.summary["rows_skipped"] == {"event refused by Brevo: bad o1": 1}
    again = target.run(singer_lines({"events": opened_events(3)}))  # nothing left pending
    assert again.returncode == 0, again.stderr
    assert len(brevo.calls("POST", "/events/batch$")) == 2


def test_400s_naming_rows_are_resent_at_most_twice_then_the_run_stops(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    first_row = {"status": "failed", "total_events": 1, "successful_events": 0,
                 "failed_events": 1, "errors": [{"eventIndex": [0], "message": "bad"}]}  # fmt: skip
    brevo.fail_next("POST /v3/events/batch", 400, first_row, times=3)
    lines = singer_lines({"events": opened_events(5)})
    run = target.run(lines)
    assert run.returncode == 1
    assert [c.status for c in brevo.calls("POST", "/events/batch$")] == [400, 400, 400]
    assert "answered 400 naming other events after 2 resends" in run.stderr
    assert run.states == []
    rerun = target.run(lines)  # o0 and o1 were refused for good; the rest was left pending
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({"o2": 1, "o3": 1, "o4": 1})


def test_a_400_naming_no_event_stops_without_marking_any_sent(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    brevo.fail_next("POST /v3/events/batch", 400, {"message": "Something is wrong"})
    lines = singer_lines({"events": opened_events(3)})
    run = target.run(lines)
    assert run.returncode == 1
    assert "answered 400 Something is wrong without naming the events" in run.stderr
    assert run.states == []
    assert "Traceback" not in run.stderr
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})


def test_a_207_counting_more_failures_than_it_names_counts_them_refused(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    errors = [{"eventIndex": [0], "message": "bad o0"}]
    partial = {"status": "partial_success", "total_events": 3, "successful_events": 1,
               "failed_events": 2, "errors": errors}  # fmt: skip
    brevo.fail_next("POST /v3/events/batch", 207, partial)
    run = target.run(singer_lines({"events": opened_events(3)}))
    assert run.returncode == 0, run.stderr
    assert run.summary["events_sent"] == 1
    assert run.summary["rows_skipped"] == {
        "event refused by Brevo without naming it": 1,
        "event refused by Brevo: bad o0": 1,
    }
    assert "reported 2 failed events but named 1" in run.stderr


def test_an_event_name_brevo_would_refuse_is_a_clear_settings_error(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(singer_lines({"events": opened_events(1)}), event_names={"opened": "a b"})
    assert run.returncode == 1
    assert "event_names: Brevo accepts only 1-255 of A-Z a-z 0-9 _ -" in run.stderr
    assert "opened: 'a b'" in run.stderr
    assert "Traceback" not in run.stderr
    assert brevo.requests == []


def test_a_400_without_rows_stops_the_run_with_its_message(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    brevo.fail_next("POST /v3/contacts/import", 400, {"code": "invalid_parameter",
                                                      "message": "List ids not found"})  # fmt: skip
    run = target.run(singer_lines({"events": opened_events(2)}))
    assert run.returncode == 1
    assert "List ids not found" in run.stderr
    assert run.states == []
    assert "Traceback" not in run.stderr


def test_invalid_emails_are_skipped_and_counted(brevo: FakeBrevo, target: TargetRunner) -> None:
    streams = {
        "events": [
            *opened_events(2),
            tap_record("opened", at(0), event_id="x", recipient="bad@", message_id="m"),
        ],
        "bounces": [{"domain": "d", "address": "nobody", "created_at": "2026-11-01T00:00:00Z"}],
        "list_members": [{"list_address": "l@d.com", "address": None, "name": "X"}],
    }
    run = target.run(singer_lines(streams))
    assert run.returncode == 0, run.stderr
    assert run.summary["rows_skipped"] == {
        "bounces: invalid email": 1,
        "events: invalid email": 1,
        "list_members: invalid email": 1,
    }
    assert sorted(brevo.contacts) == ["user0@example.com", "user1@example.com"]
    assert "Skipped events record 'x': invalid email" in run.stderr
    assert "Skipped bounces record 'nobody': invalid email" in run.stderr


def test_the_first_events_and_the_preparation_go_after_a_thousand_records_not_a_batch(
    brevo: FakeBrevo, tmp_path: Path
) -> None:
    # batch_size_rows stays at its default (10,000): a sink's first batch is 1,000 records
    # and each next one twice the last, so Brevo starts after a thousand records, and the
    # run's attributes and import list are made while the input is still open, not in the
    # flush (where the contacts bucket's 10 calls a second held the events up).
    records = opened_events(1_300)
    runner = TargetRunner(brevo, tmp_path)
    process = runner.start(runner.settings_file())
    assert process.stdin is not None
    process.stdin.write("\n".join(singer_lines({"events": records})[:-1]) + "\n")
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if brevo.events and brevo.calls("POST", "/contacts/lists$"):
            break
        time.sleep(0.05)
    sent_while_reading = len(brevo.events)
    prepared_while_reading = [r.path for r in brevo.requests if "/contacts" in r.path]
    state = json.dumps({"type": "STATE", "value": {"bookmarks": {"run": 1}}})
    stdout, stderr = process.communicate(state + "\n", timeout=120)
    assert process.returncode == 0, stderr
    assert sent_while_reading == 1_000  # the first batch's, in full batches of 200
    assert "/v3/contacts/attributes/normal/MG_OPEN_RATE" in prepared_while_reading
    assert "/v3/contacts/lists" in prepared_while_reading  # the import list, created
    assert "/v3/contacts/import" not in prepared_while_reading  # contacts wait for the flush
    assert len(brevo.calls("GET", "/contacts/attributes$")) == 1  # prepared once
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(1_300)})
    assert Run(process.returncode, stdout, stderr).states == [{"bookmarks": {"run": 1}}]
    assert brevo.violations == []


def test_a_run_with_nothing_for_brevo_makes_no_preparation_call(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # The same 1,300 events again (a tap replaying after a lost STATE): all known, nothing
    # waits for Brevo, so the run prepares nothing, while reading or in its flush.
    lines = singer_lines({"events": opened_events(1_300)})
    assert target.run(lines).returncode == 0
    before = len(brevo.requests)
    again = target.run(lines)
    assert again.returncode == 0, again.stderr
    assert again.summary["duplicates_ignored"] == 1_300
    assert [r.path for r in brevo.requests[before:] if "/contacts" in r.path] == []


def test_a_missing_list_found_while_reading_stops_the_run_and_the_rerun_sends_the_rest(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # The preparation now runs while the input is read: its error stops the run there, with
    # its one line, after the first batch's events went; the rerun sends only the others.
    lines = singer_lines({"events": opened_events(1_300)})
    missing = target.run(lines, lists={"engaged": 999})
    assert missing.returncode == 1
    assert "list 999 (lists.engaged) does not exist in Brevo" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert missing.states == []
    assert len(brevo.events) == 1_000  # the first batch's, before the error
    engaged = brevo.add_list("engaged")
    rerun = target.run(lines, lists={"engaged": engaged})
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(1_300)})
    assert rerun.states == [{"bookmarks": {"run": 1}}]


@on_both_stores
def test_a_crash_between_two_batches_then_a_rerun_sends_every_event_once(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines({"events": opened_events(450)})  # batches of 200, 200 and 50
    brevo.hold("POST /v3/events/batch", after=1)
    process = target.start(target.settings_file(), target.input_file(lines))
    assert brevo.held.wait(timeout=60), "the second batch never came"
    process.kill()  # the target dies while Brevo holds its second batch
    crashed = target.finish(process)
    brevo.release()
    assert crashed.states == []
    assert len(brevo.events) == 200
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(450)})
    assert rerun.summary["events_sent"] == 250
    assert rerun.states == [{"bookmarks": {"run": 1}}]


@on_both_stores
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_flush_rolls_back_and_exits_non_zero_without_state(
    brevo: FakeBrevo, target: TargetRunner, signum: int
) -> None:
    lines = singer_lines({"events": opened_events(450)})  # batches of 200, 200 and 50
    brevo.hold("POST /v3/events/batch", after=1)
    process = target.start(target.settings_file(), target.input_file(lines))
    assert brevo.held.wait(timeout=60), "the second batch never came"
    process.send_signal(signum)  # Ctrl-C / SIGTERM while Brevo holds the second batch
    stopped = target.finish(process)
    brevo.release()
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert stopped.states == []
    assert "rolling back and stopping without emitting STATE" in stopped.stderr
    assert len(brevo.calls("POST", "/events/batch$")) == 2  # no re-entered flush sent more
    assert len(brevo.events) == 200
    rerun = target.run(lines)
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(450)})
    assert rerun.summary["events_sent"] == 250


@pytest.mark.usefixtures("in_process_target")
def test_a_signal_as_a_batch_begins_to_be_written_emits_no_state_ahead_of_the_store(
    brevo: FakeBrevo, target: TargetRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    # 500 events, the tap's STATE, 500 more: the 1,000th fills the first batch, and SIGTERM
    # arrives as that batch begins to be written (here: when it asks whether Brevo's pace
    # bounds the run). Either the batch is written and then the STATE, or neither: a STATE
    # emitted while the batch's facts were neither pending nor stored loses them for good.
    first, second = opened_events(1_000)[:500], opened_events(1_000)[500:]
    lines = [
        *singer_lines({"events": first}, state={"bookmarks": {"run": 1}}),
        *(json.dumps({"type": "RECORD", "stream": "events", "record": r}) for r in second),
    ]
    runner = TargetBrevo(config=target.config())
    asked = runner.brevo_bound

    def signalled_then_asked() -> bool:
        runner.brevo_bound = asked  # type: ignore[method-assign]
        os.kill(os.getpid(), signal.SIGTERM)
        return asked()

    runner.brevo_bound = signalled_then_asked  # type: ignore[method-assign]
    with pytest.raises(Terminated):
        runner.listen(io.StringIO("\n".join(lines) + "\n"))
    runner.close()
    assert capsys.readouterr().out == ""  # no STATE
    end = json.dumps({"type": "STATE", "value": {"bookmarks": {"run": 2}}})
    rerun = target.run([*lines, end])
    assert rerun.returncode == 0, rerun.stderr
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(1_000)})


def test_a_signal_between_writes_writes_what_was_read_and_emits_its_state(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines({"events": opened_events(3)}, state={"bookmarks": {"run": 7}})
    bad = json.dumps({"type": "RECORD", "stream": "events",
                      "record": tap_record("opened", at(0), event_id="x", recipient="bad@",
                                           message_id="m")})  # fmt: skip
    process = target.start(target.settings_file())
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write("\n".join([*lines, bad]) + "\n")
    process.stdin.flush()  # and the input stays open: the tap is still running
    seen = []
    for line in process.stderr:  # the bad record, after the STATE, is warned once read
        seen.append(line)
        if "Skipped events record" in line:
            break
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    brevo.settle()
    run = Run(process.returncode, stdout, "".join(seen) + stderr)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmarks": {"run": 7}}]
    assert sorted(brevo.contacts) == [f"user{i}@example.com" for i in range(3)]
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    assert run.summary["events_sent"] == 3


@on_both_stores
def test_a_second_run_on_the_same_store_fails_clearly_while_the_first_runs(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    lines = singer_lines({"events": opened_events(3)})
    brevo.hold("POST /v3/events/batch", after=0)
    first = target.start(target.settings_file(), target.input_file(lines))
    assert brevo.held.wait(timeout=60), "the first run never sent its events"
    calls = len(brevo.requests)
    second = target.run(lines, run_lock_wait_seconds=0)  # the same store, the first mid-flush
    assert second.returncode == 1
    assert "another target-brevo run" in second.stderr
    assert "holds the engagement store" in second.stderr
    assert "two runs must not overlap" in second.stderr
    assert second.states == []
    assert len(brevo.requests) == calls  # it made no call at all
    brevo.release()  # the held batch fails (503) and is retried by the first run
    done = target.finish(first)
    assert done.returncode == 0, done.stderr
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    third = target.run(lines)  # the first released the store when it ended
    assert third.returncode == 0, third.stderr


@on_both_stores
@pytest.mark.usefixtures("in_process_target")
def test_two_targets_in_one_process_are_two_runs_that_cannot_overlap(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    text = "\n".join(singer_lines({"events": opened_events(3)})) + "\n"
    brevo.hold("POST /v3/events/batch", after=0)
    errors: list[BaseException] = []

    def listen(runner: TargetBrevo) -> None:
        try:
            runner.listen(io.StringIO(text))
        except BaseException as exc:  # the test thread reports it, not the worker
            errors.append(exc)

    first = TargetBrevo(config=target.config())
    # built while the first runs: holds nothing
    second = TargetBrevo(config=target.config(run_lock_wait_seconds=0))
    worker = threading.Thread(target=listen, args=(first,))
    worker.start()
    assert brevo.held.wait(timeout=60), "the first run never sent its events"
    calls = len(brevo.requests)
    with pytest.raises(RunLockedError, match="holds the engagement store"):
        second.listen(io.StringIO(text))
    second.close()
    assert len(brevo.requests) == calls  # the second made no call at all
    brevo.release()  # the held batch fails (503) and is retried by the first run
    worker.join(timeout=120)
    assert not worker.is_alive() and errors == []
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    TargetBrevo(config=target.config()).listen(io.StringIO(text))  # the store is free again
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})


@pytest.mark.parametrize(("events_per_second", "in_parts"), [(5, True), (None, False)])
@pytest.mark.usefixtures("in_process_target")
def test_a_batch_is_written_in_parts_while_brevos_pace_bounds_the_run(
    tmp_path: Path, events_per_second: int | None, in_parts: bool
) -> None:
    # 2,500 events: batches of 1,000 and (at the end) 1,500. At Brevo's pace the first
    # batch's 1,000 events use up the events window (5 calls in 3 s: wide enough for the rest
    # of the input to be read before it ends, on a slow machine too), so the second is written
    # 1,000 then 500, with Brevo's turn between the two; with room to spare it is written
    # whole. What another connection sees committed at each of Brevo's turns tells which.
    limits = {"events": (events_per_second, 3.0)} if events_per_second else None
    store = tmp_path / "engagement.sqlite"
    committed: list[int] = []
    with FakeBrevo(rate_limits=limits) as brevo:
        runner = TargetBrevo(config=TargetRunner(brevo, tmp_path).config())
        turn = runner.meanwhile

        def seen_then_turn() -> None:
            with sqlite3.connect(store) as other:
                row = other.execute("SELECT count(*) FROM brevo_events").fetchone()
            committed.append(row[0])
            turn()

        runner.meanwhile = seen_then_turn  # type: ignore[method-assign]
        text = "\n".join(singer_lines({"events": opened_events(2_500)})) + "\n"
        runner.listen(io.StringIO(text))
        assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(2_500)})
        assert brevo.violations == []
    assert (2_000 in committed) is in_parts, sorted(set(committed))
    assert committed[-1] == 2_500


@pytest.mark.usefixtures("in_process_target")
def test_only_the_command_line_tunes_the_garbage_collector(target: TargetRunner) -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    TargetBrevo(config=target.config()).listen(io.StringIO(""))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    config = target.settings_file()
    code = (
        "import gc, sys; from target_brevo.target import TargetBrevo; "
        "TargetBrevo.cli(['--config', sys.argv[1], '--input', '/dev/null'], "
        "standalone_mode=False); print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "(50000, 50, 100) True"


@on_both_stores
def test_a_failed_import_is_found_at_the_next_run_which_imports_its_contacts_again(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    brevo.import_failures.append("Processing timeout exceeded")
    lines = singer_lines({"events": opened_events(3)})
    first = target.run(lines)  # Brevo accepted the import (202), then it failed
    assert first.returncode == 0, first.stderr
    assert first.states == [{"bookmarks": {"run": 1}}]
    assert first.summary["imports_unconfirmed"] == 1
    assert brevo.contacts == {}
    second = target.run(singer_lines({}))  # nothing new from the tap
    assert second.returncode == 0, second.stderr
    assert "import process 1 did not complete (Processing timeout exceeded)" in second.stderr
    assert "its 3 contacts are imported again" in second.stderr
    assert second.summary["imports_failed"] == 1
    assert second.summary["contacts_upserted"] == 3
    assert sorted(brevo.contacts) == [f"user{i}@example.com" for i in range(3)]
    assert sent_ids(brevo) == Counter({"o0": 1, "o1": 1, "o2": 1})
    third = target.run(singer_lines({}))
    assert third.summary["imports_unconfirmed"] == 0
    assert third.summary["imports_failed"] == 0


def test_an_import_brevo_no_longer_lists_is_imported_again(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    brevo.import_seconds = 3600.0
    lines = singer_lines({"events": opened_events(1)})
    first = target.run(lines, settle=False)
    assert first.summary["imports_unconfirmed"] == 1
    with brevo.lock:
        del brevo.processes[1]  # Brevo dropped it from its list, done or not
    second = target.run(singer_lines({}))
    assert second.returncode == 0, second.stderr
    assert "import process 1 did not complete (no longer listed by Brevo)" in second.stderr
    assert second.summary["imports_failed"] == 1
    assert second.summary["contacts_upserted"] == 1  # imported again, from the store
    assert "user0@example.com" in brevo.contacts


def test_imports_are_checked_all_at_once_and_sparingly(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # Five imports: (blocklisted?, lists) differ for each of the five contacts.
    brevo.import_seconds = 3600.0  # Brevo is slow today
    lists = {role: brevo.add_list(role) for role in ("engaged", "bounced", "complained")}
    events = [
        tap_record("opened", at(0), event_id="a", recipient="a@example.com", message_id="m1"),
        tap_record(
            "failed",
            at(0),
            event_id="b",
            recipient="b@example.com",
            severity="permanent",
            message_id="m2",
        ),
        tap_record("complained", at(0), event_id="c", recipient="c@example.com", message_id="m3"),
        tap_record("delivered", at(0), event_id="d", recipient="d@example.com", message_id="m4"),
        tap_record("unsubscribed", at(0), event_id="e", recipient="e@example.com", message_id="m5"),
    ]
    lines = singer_lines({"events": events})

    def checks() -> list[dict[str, list[str]]]:
        assert brevo.calls("GET", "/processes/") == []  # never one call per process
        return [r.query for r in brevo.calls("GET", "/processes$")]

    first = target.run(lines, lists=lists, settle=False)
    assert first.returncode == 0, first.stderr
    assert len(brevo.calls("POST", "/contacts/import$")) == 5
    assert checks() == []  # too young to ask about: nothing is waited for
    assert first.summary["imports_unconfirmed"] == 5
    assert first.states == [{"bookmarks": {"run": 1}}]  # Brevo accepted them all (202)
    second = target.run(singer_lines({}), lists=lists, settle=False)
    assert checks() == [{"limit": ["50"], "offset": ["0"], "sort": ["desc"]}]
    assert second.summary["imports_unconfirmed"] == 5  # still running: asked once, kept
    brevo.settle()
    third = target.run(singer_lines({}), lists=lists, settle=False)
    assert len(checks()) == 2
    assert third.summary["imports_unconfirmed"] == 0
    assert target.run(singer_lines({}), lists=lists).returncode == 0
    assert len(checks()) == 2  # nothing left to ask about


def test_skips_are_warned_ten_per_reason_then_only_counted(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    bad = [
        tap_record("opened", at(0), event_id=f"b{i}", recipient=f"bad{i}@", message_id="m")
        for i in range(12)
    ]
    run = target.run(singer_lines({"events": bad}))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("Skipped events record") == 10
    assert "Skips beyond 10 per reason were only counted" in run.stderr
    assert run.summary["rows_skipped"] == {"events: invalid email": 12}
    assert brevo.requests == []  # nothing valid: nothing to send


def test_stored_events_go_to_brevo_while_the_input_is_still_being_read(
    brevo: FakeBrevo, tmp_path: Path
) -> None:
    # The sink stores every batch_size_rows records (10,000 by default); from then on, events
    # already stored are sent as Brevo's pace allows, while the tap (here: an open stdin) is
    # still writing. Before, they all waited for the end of the input, and the run's waits
    # for Brevo followed its work.
    first, rest = opened_events(700), opened_events(900)[700:]
    runner = TargetRunner(brevo, tmp_path)
    process = runner.start(runner.settings_file(batch_size_rows=500))
    assert process.stdin is not None
    lines = singer_lines({"events": first})[:-1]  # no STATE yet: the tap is mid-stream
    process.stdin.write("\n".join(lines) + "\n")
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while not brevo.events and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    sent_while_reading = len(brevo.events)
    rest_lines = [json.dumps({"type": "RECORD", "stream": "events", "record": r}) for r in rest]
    state = json.dumps({"type": "STATE", "value": {"bookmarks": {"run": 1}}})
    stdout, stderr = process.communicate("\n".join([*rest_lines, state]) + "\n", timeout=120)
    assert process.returncode == 0, stderr
    assert sent_while_reading >= 200  # at least one batch before the input ended
    assert sent_ids(brevo) == Counter({f"o{i}": 1 for i in range(900)})  # each exactly once
    assert Run(process.returncode, stdout, stderr).states == [{"bookmarks": {"run": 1}}]
