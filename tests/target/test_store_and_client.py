"""The engagement store (SQLite and real PostgreSQL) and the client's batching, not the CLI."""

from __future__ import annotations

import functools
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fakes.brevo import BREVO_RATE_LIMITS, FakeBrevo
from fakes.events import tap_record
from fakes.sandbox import reset
from plugin_cli import SettingError
from target_brevo import rules
from target_brevo.client import (
    MAX_EVENT_BYTES,
    BrevoClient,
    BrevoError,
    Failure,
    Pacer,
    chunk_by_size,
    classify,
    fit_event,
)
from target_brevo.rules import ContactState
from target_brevo.store import EngagementStore, store_url
from tests.target.conftest import API_KEY, at, on_both_stores


def facts(*records: dict[str, object]) -> list[rules.EventFacts]:
    """Records as facts, failing the test on any skip."""
    out = [rules.event_facts(r, rules.DEFAULT_EVENT_NAMES) for r in records]
    assert all(isinstance(f, rules.EventFacts) for f in out)
    return out  # type: ignore[return-value]


def test_aggregates_count_messages_not_events(store: EngagementStore) -> None:
    ann = "ann@example.com"
    batch = facts(
        tap_record("delivered", at(0), event_id="1", recipient=ann, message_id="m1"),
        tap_record("opened", at(1), event_id="2", recipient=ann, message_id="m1"),
        tap_record("opened", at(2), event_id="3", recipient=ann, message_id="m1"),
        tap_record(
            "clicked", at(3), event_id="4", recipient=ann, message_id="m2"
        ),  # a click implies delivery
        tap_record(
            "failed", at(4), event_id="5", recipient=ann, message_id="m3", severity="temporary"
        ),
    )
    assert store.apply_events(batch) == 5
    (contact,) = store.dirty_contacts()
    assert (contact.delivered, contact.opened, contact.clicked) == (2, 1, 1)
    assert (contact.engaged, contact.soft_bounce, contact.hard_bounce) == (True, True, False)
    assert contact.last_delivered == "2026-11-01"


@on_both_stores
def test_an_event_is_applied_once_across_batches_and_runs(engagement_store: str) -> None:
    url = store_url(engagement_store)
    first = EngagementStore(url)
    event = facts(tap_record("opened", at(0), event_id="1", recipient="a@x.com", message_id="m"))
    assert first.apply_events(event + event) == 1  # twice in one batch
    first.commit()
    first.close()
    second = EngagementStore(url)
    assert second.apply_events(event) == 0  # and again in a later run
    assert second.counts() == {"brevo_events": 1, "brevo_messages": 1, "brevo_contacts": 1}
    second.close()


def test_outbox_dirty_and_pending_until_marked(store: EngagementStore) -> None:
    store.apply_events(
        facts(tap_record("delivered", at(0), event_id="1", recipient="a@x.com", message_id="m"))
    )
    store.upsert_contacts([ContactState("b@x.com", complained=True)])
    assert [c.email for c in store.dirty_contacts()] == ["a@x.com", "b@x.com"]
    assert [c.email for c in store.dirty_contacts(after="a@x.com")] == ["b@x.com"]
    (pending,) = store.pending_events()
    assert json.loads(pending[1])["event_name"] == "email_delivered"
    store.mark_clean(["a@x.com", "b@x.com"])
    store.mark_sent([pending[0]])
    assert store.dirty_contacts() == []
    assert store.pending_events() == []
    assert not store.has_outstanding()


def test_flags_only_turn_on_and_latest_delivery_and_names_win(store: EngagementStore) -> None:
    store.upsert_contacts([ContactState("a@x.com", hard_bounce=True, first_name="Ann")])
    store.upsert_contacts([ContactState("a@x.com", first_name=None, last_name="Lee")])
    late = tap_record("delivered", at(86_400.0), event_id="2", recipient="a@x.com", message_id="m2")
    early = tap_record("delivered", at(0), event_id="1", recipient="a@x.com", message_id="m1")
    store.apply_events(facts(late))
    store.apply_events(facts(early))
    (contact,) = store.dirty_contacts()
    assert contact.hard_bounce is True
    assert (contact.first_name, contact.last_name) == ("Ann", "Lee")
    assert contact.last_delivered == "2026-11-02"


def test_a_contact_is_dirty_only_when_something_changed(store: EngagementStore) -> None:
    member = ContactState("a@x.com", first_name="Ann", last_name="Lee")
    store.upsert_contacts([member])
    store.mark_clean(["a@x.com"])
    store.upsert_contacts([member])  # the same list member again (full-table stream)
    store.upsert_contacts([ContactState("a@x.com", first_name=None, last_name=None)])
    assert store.dirty_contacts() == []
    store.upsert_contacts([member._replace(first_name="Annie")])
    assert [c.first_name for c in store.dirty_contacts()] == ["Annie"]
    store.mark_clean(["a@x.com"])
    store.upsert_contacts([ContactState("a@x.com", complained=True)])
    assert [c.complained for c in store.dirty_contacts()] == [True]
    store.mark_clean(["a@x.com"])
    store.apply_events(
        facts(tap_record("delivered", at(0), event_id="1", recipient="a@x.com", message_id="m"))
    )
    assert [c.delivered for c in store.dirty_contacts()] == [1]  # new message: dirty


def test_old_sent_event_identities_are_forgotten_pending_ones_never(
    store: EngagementStore,
) -> None:
    day = 86_400.0
    old_sent, old_pending, recent = facts(
        tap_record("opened", at(-50 * day), event_id="1", recipient="a@x.com", message_id="m1"),
        tap_record("opened", at(-50 * day), event_id="2", recipient="a@x.com", message_id="m2"),
        tap_record("opened", at(0), event_id="3", recipient="a@x.com", message_id="m3"),
    )
    store.apply_events([old_sent, old_pending, recent])
    store.mark_sent([old_sent.key, recent.key])
    assert store.forget_old_events(45) == 1  # 50 days before the newest event
    assert store.apply_events([recent, old_pending]) == 0  # still recognised
    assert store.apply_events([old_sent]) == 1  # forgotten: only a replay past 45 days
    (contact,) = store.dirty_contacts()
    assert contact.delivered == 3  # messages (the rates) are never forgotten
    future = facts(
        tap_record("opened", at(3650 * day), event_id="4", recipient="a@x.com", message_id="m4")
    )
    store.apply_events(future)
    store.mark_sent([future[0].key, old_sent.key, recent.key])
    assert store.forget_old_events(45) == 1  # old_sent again; a future stamp moves nothing


@on_both_stores
def test_dry_run_store_commits_nothing(engagement_store: str) -> None:
    url = store_url(engagement_store)
    dry = EngagementStore(url, dry_run=True)
    dry.apply_events(
        facts(tap_record("opened", at(0), event_id="1", recipient="a@x.com", message_id="m"))
    )
    dry.commit()
    dry.close()
    real = EngagementStore(url)
    assert real.counts() == {"brevo_events": 0, "brevo_messages": 0, "brevo_contacts": 0}
    real.close()


def test_default_store_is_inside_the_meltano_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    expected = tmp_path / ".meltano" / "target-brevo" / "engagement.sqlite"
    assert store_url(None) == f"sqlite:///{expected}"
    monkeypatch.delenv("MELTANO_PROJECT_ROOT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert store_url("") == f"sqlite:///{tmp_path}/data/target-brevo/engagement.sqlite"


def test_store_url_accepts_paths_and_urls(tmp_path: Path) -> None:
    assert store_url("postgresql://u@db/x") == "postgresql+psycopg://u@db/x"
    assert store_url("postgres://u@db/x") == "postgresql+psycopg://u@db/x"
    assert store_url("postgresql+psycopg2://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert store_url(str(tmp_path / "b.sqlite")) == f"sqlite:///{tmp_path}/b.sqlite"


def test_a_store_path_in_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"engagement_store: the folder .*/a does not exist"):
        store_url(str(tmp_path / "a" / "b.sqlite"))
    assert not (tmp_path / "a").exists()


def test_chunks_respect_count_and_size_limits() -> None:
    small = [(i, b'{"e":1}') for i in range(450)]
    assert [len(c) for c in chunk_by_size(small, 200, MAX_EVENT_BYTES)] == [200, 200, 50]
    big = [(i, b'"' + b"x" * 200_000 + b'"') for i in range(5)]
    chunks = list(chunk_by_size(big, 200, MAX_EVENT_BYTES))
    assert [len(c) for c in chunks] == [2, 2, 1]
    for chunk in chunks:
        assert sum(len(item) + 1 for _, item in chunk) + 64 <= MAX_EVENT_BYTES
    with pytest.raises(BrevoError, match="over Brevo's limit"):
        list(chunk_by_size([(0, b"x" * MAX_EVENT_BYTES)], 200, MAX_EVENT_BYTES))


def test_events_go_in_batches_of_200(brevo: FakeBrevo) -> None:
    client = BrevoClient(brevo.base_url + "/v3", API_KEY)
    items = [
        (i, json.dumps({"event_name": "e", "identifiers": {"email_id": f"u{i}@x.com"}}).encode())
        for i in range(401)
    ]
    answered: list[int] = []
    client.send_events(items, lambda keys, rejected, unnamed: answered.append(len(keys)))
    assert answered == [200, 200, 1]
    assert len(brevo.events) == 401
    assert client.stats.calls == {"POST /events/batch": 3}


def test_a_429_waits_once_for_its_reset(brevo: FakeBrevo) -> None:
    waits: list[float] = []
    client = BrevoClient(brevo.base_url + "/v3", API_KEY, sleep=waits.append)
    limit = {"x-sib-ratelimit-limit": "10", "x-sib-ratelimit-remaining": "0"}
    brevo.fail_next(
        "GET /v3/contacts/attributes", 429, headers={**limit, "x-sib-ratelimit-reset": "7"}
    )
    assert "FIRSTNAME" in client.attributes()
    assert len(waits) == 1 and 7.0 <= waits[0] <= 7.25  # the reset, jittered, and only that
    assert client.stats.retries == 1


class Clock:
    """A clock that moves only when told to (or when slept on)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pacer_waits_only_at_zero_and_only_until_the_window_it_saw_open_ends() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    assert pacer.wait_for("events") == 0.0  # nothing known: go
    pacer.observe("events", limit=10, remaining=9, reset=1)  # this call opened the window
    for left in range(8, -1, -1):
        assert pacer.ready("events")  # calls left: no wait at all (the old client slept at 1)
        clock.now += 0.004
        pacer.observe("events", limit=10, remaining=left, reset=1)
    # none left: wait until the window ends, 1 s after its opening answer, not a whole
    # rounded-up second from now
    assert pacer.wait_for("events") == pytest.approx(1.0 - 9 * 0.004)
    assert not pacer.ready("events")
    assert pacer.wait_for("contacts") == 0.0  # another bucket is not held up
    clock.now = 101.0
    assert pacer.ready("events")
    # a window this run did not see open: its reported reset, which is never early
    pacer.observe("processes", limit=100, remaining=0, reset=7)
    assert pacer.wait_for("processes") == 7.0
    pacer.forget("processes")  # a 429 waits for its own reset instead
    assert pacer.ready("processes")


def test_calls_go_at_brevos_pace_without_a_429_and_wait_only_between_windows() -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    items = [
        (i, json.dumps({"event_name": "e", "identifiers": {"email_id": f"u{i}@x.com"}}).encode())
        for i in range(25 * 200)
    ]
    with FakeBrevo(api_key=API_KEY, rate_limits=BREVO_RATE_LIMITS) as fake:
        client = BrevoClient(fake.base_url + "/v3", API_KEY, sleep=sleep)
        client.send_events(items, lambda *answer: None)
        statuses = [r.status for r in fake.requests]
    assert statuses == [202] * 25  # never refused...
    # ...and at most one wait per full window of 10 calls (none if a slow machine let the
    # window end first), each for what is left of the window: the old client slept at one
    # call left and a whole rounded-up second at none (4 sleeps, over 3 s)
    assert len(waits) <= 2
    assert all(0 < w < 1.0 for w in waits)
    assert client.stats.retries == 0


def test_an_events_batch_that_never_reached_brevo_is_retried() -> None:
    # Nothing listens on port 9: the connection is refused, so Brevo surely stored nothing
    # and a retry cannot duplicate anything.
    waits: list[float] = []
    client = BrevoClient("http://127.0.0.1:9/v3", API_KEY, max_tries=3, sleep=waits.append)
    item = json.dumps({"event_name": "e", "identifiers": {"email_id": "a@x.com"}}).encode()
    with pytest.raises(BrevoError, match="could not reach Brevo"):
        client.send_events([(0, item)], lambda *answer: None)
    assert client.stats.calls == {"POST /events/batch": 3}
    assert len(waits) == 2


@pytest.mark.parametrize(
    ("status", "failure"),
    [(401, Failure.REFUSED), (429, Failure.NOT_STORED), (425, Failure.NOT_STORED),
     (503, Failure.NOT_STORED), (500, Failure.MAYBE_STORED), (502, Failure.MAYBE_STORED),
     (504, Failure.MAYBE_STORED), (507, Failure.MAYBE_STORED), (200, None), (202, None),
     (207, None), (400, None), (404, None)],
)  # fmt: skip
def test_each_status_is_classified_once(status: int, failure: Failure | None) -> None:
    assert classify(status) is failure


@pytest.mark.parametrize(
    ("error", "failure"),
    [(requests.ConnectTimeout(), Failure.NOT_STORED),
     (requests.ReadTimeout(), Failure.MAYBE_STORED),
     (requests.exceptions.ChunkedEncodingError(), Failure.MAYBE_STORED),
     (requests.exceptions.ContentDecodingError(), Failure.MAYBE_STORED),
     (requests.exceptions.InvalidHeader(), Failure.REFUSED),
     (requests.exceptions.MissingSchema(), Failure.REFUSED)],
)  # fmt: skip
def test_each_exception_is_classified_once(
    error: requests.RequestException, failure: Failure
) -> None:
    assert classify(error) is failure


TLS = Path(__file__).parent.parent / "tls"  # a self-signed certificate for 127.0.0.1


def test_tls_failures_end_in_one_error_and_an_untrusted_certificate_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = json.dumps({"event_name": "e", "identifiers": {"email_id": "a@x.com"}}).encode()
    with FakeBrevo(api_key=API_KEY) as plain:  # TLS spoken to a server that does not speak it
        waits: list[float] = []
        client = BrevoClient(plain.base_url.replace("http:", "https:") + "/v3", API_KEY,
                             max_tries=3, sleep=waits.append)  # fmt: skip
        with pytest.raises(BrevoError, match=r"could not reach Brevo .*SSLError"):
            client.attributes()  # a read: retried
        assert len(waits) == 2
        with pytest.raises(BrevoError, match=r"SSLError .*may or may not have stored it"):
            client.send_events([(0, event)], lambda *answer: None)  # a batch: never resent
        assert client.stats.calls["POST /events/batch"] == 1
    secure = FakeBrevo(api_key=API_KEY)
    secure.use_tls(str(TLS / "cert.pem"), str(TLS / "key.pem"))
    with secure:
        waits = []
        client = BrevoClient(secure.base_url + "/v3", API_KEY, sleep=waits.append)
        with pytest.raises(BrevoError, match=r"certificate verify failed.*no retry can change"):
            client.attributes()  # the certificate is not one this machine trusts
        assert waits == []
        assert client.stats.calls == {"GET /contacts/attributes": 1}
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TLS / "cert.pem"))  # trusted: it answers
        assert "FIRSTNAME" in client.attributes()
        assert secure.violations == []


def test_an_attribute_brevo_already_has_counts_as_created(brevo: FakeBrevo) -> None:
    brevo.attributes["MG_SCORE"] = "float"  # made since the target listed them, by anyone
    client = BrevoClient(brevo.base_url + "/v3", API_KEY)
    client.create_attribute("MG_SCORE", "float")
    assert [c.status for c in brevo.calls("POST", "/contacts/attributes/")] == [400]


def brevo_event(**properties: object) -> bytes:
    """An encoded Brevo event with these event_properties."""
    return json.dumps({"event_name": "email_opened", "identifiers": {"email_id": "a@x.com"},
                       "event_properties": properties}).encode()  # fmt: skip


def test_an_event_is_fitted_by_cutting_its_longest_text_only_as_much_as_needed() -> None:
    small = brevo_event(subject="Hello", tags=["a"])
    assert fit_event(small) == (small, [], None)  # the very same bytes: nothing decoded
    fit = fit_event(brevo_event(id="e1", subject="é" * 40_000, url="u" * 30_000, n=1))
    assert fit.payload is not None and fit.trimmed == ["subject"]
    properties = json.loads(fit.payload)["event_properties"]
    assert properties["truncated"] == ["subject"]
    assert (properties["id"], properties["url"], properties["n"]) == ("e1", "u" * 30_000, 1)
    size = len(json.dumps(properties))  # \u00e9 is 6 bytes: Brevo's 50 KB, counted at worst
    assert 50 * 1024 - 6 < size <= 50 * 1024
    both = json.loads(fit_event(brevo_event(a="x" * 60_000, b="y" * 60_000)).payload or b"")
    assert both["event_properties"]["truncated"] == ["a", "b"]
    assert fit_event(brevo_event(tags=["t" * 100] * 600)) == (
        None, [], "event_properties over Brevo's 50 KB with their text trimmed"
    )  # fmt: skip
    bad_name = json.dumps({"event_name": "a b", "event_properties": {"s": "x" * 60_000}})
    assert fit_event(bad_name.encode()).unfit == (
        "event_name Brevo does not accept (1-255 of A-Z a-z 0-9 _ -)"
    )


def test_forgetting_and_pending_reads_use_the_pending_timestamp_index(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # a store made before the index existed
        old.execute(
            "CREATE TABLE brevo_events (id VARCHAR(64) NOT NULL, timestamp VARCHAR(40) NOT NULL,"
            " pending BOOLEAN NOT NULL, payload TEXT, PRIMARY KEY (id, timestamp))"
        )
    opened = EngagementStore(store_url(str(path)))
    opened.close()
    with sqlite3.connect(path) as db:
        plans = [
            " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in (
                "DELETE FROM brevo_events WHERE pending = 0 AND timestamp < '2026-01-01'",
                "SELECT id FROM brevo_events WHERE pending = 1 ORDER BY timestamp, id LIMIT 10",
            )
        ]
    assert all("ix_brevo_events_pending_timestamp" in plan for plan in plans), plans


def test_collecting_the_standard_suite_leaves_no_folder_behind() -> None:
    code = "import tests.target.test_standard as t; print(t._STORE.parent)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("target-brevo-standard-")
    assert not folder.exists()


def test_sandbox_reset_removes_the_store_with_its_wal_and_shm(tmp_path: Path) -> None:
    store = EngagementStore(store_url(str(tmp_path / "engagement.sqlite")))
    store.apply_events(
        facts(tap_record("opened", at(0), event_id="1", recipient="a@x.com", message_id="m"))
    )
    store.commit()
    store.close()
    for leftover in ("engagement.sqlite-wal", "engagement.sqlite-shm"):  # as a killed run leaves
        (tmp_path / leftover).write_bytes(b"\0" * 32)
    reset(tmp_path / "no-meltano", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def random_state(rng: random.Random, email: str) -> ContactState:
    """A contact state with every field drawn at random (days, names and flags)."""
    days = (None, "2026-10-31", "2026-11-01", "2026-11-02")
    names = (None, "Ann", "Annie", "Lee")
    return ContactState(
        email,
        rng.choice(days),
        *(rng.random() < 0.3 for _ in range(5)),
        rng.choice(names),
        rng.choice(names),
    )


def interleaved(rng: random.Random, runs: list[list[ContactState]]) -> list[ContactState]:
    """The states of all runs in one random order that keeps each run's own order."""
    queues = [list(run) for run in runs if run]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_the_store_merges_exactly_as_the_rule_on_generated_contacts(
    store: EngagementStore, seed: int
) -> None:
    """The store applies rules.merge_contact, and marks dirty exactly the contacts it changes.

    Each case: a contact absent, held clean or held dirty; then one to three new states for it,
    folded in by one batch of merges (suppressions, list members) or of events (touched); the
    cases' states interleaved in their batch. 250 cases per seed.
    """
    rng = random.Random(seed)
    cases = []
    for n in range(250):
        email = f"c{n}@x.com"
        held = rng.choice(("absent", "clean", "dirty"))
        old = random_state(rng, email) if held != "absent" else None
        news = [random_state(rng, email) for _ in range(rng.randint(1, 3))]
        cases.append((email, held, old, news, rng.random() < 0.5))
    store.upsert_contacts(old for _, _, old, _, _ in cases if old is not None)
    store.mark_clean([email for email, held, _, _, _ in cases if held == "clean"])
    for touched in (False, True):
        runs = [news for _, _, _, news, by_event in cases if by_event == touched]
        store.upsert_contacts(interleaved(rng, runs), touched=touched)
    expected = {}
    for email, held, old, news, touched in cases:
        merged = functools.reduce(rules.merge_contact, news if old is None else [old, *news])
        dirty = held != "clean" or touched or merged != old
        expected[email] = (merged, dirty)
    emails = [email for email, _, _, _, _ in cases]
    dirty = {c.email for c in store.dirty_contacts(limit=len(cases))}
    assert {e: (s, e in dirty) for e, s in store.contacts(emails).items()} == expected


@on_both_stores
def test_a_store_from_before_validation_gains_its_columns_and_keeps_its_contacts(
    engagement_store: str,
) -> None:
    url = store_url(engagement_store)
    first = EngagementStore(url)
    first.upsert_contacts([ContactState("a@x.com", hard_bounce=True, first_name="Ann")])
    first.commit()
    with first.engine.begin() as conn:  # as the store was before the columns existed
        for column in ("validation_result", "validation_risk", "validated_at"):
            conn.exec_driver_sql(f"ALTER TABLE brevo_contacts DROP COLUMN {column}")
    first.close()
    again = EngagementStore(url)
    assert again.contacts(["a@x.com"])["a@x.com"] == ContactState(
        "a@x.com", hard_bounce=True, first_name="Ann"
    )
    later = ContactState("a@x.com", validation_result="undeliverable", validation_risk="high")
    again.upsert_contacts([later])
    (contact,) = again.dirty_contacts()
    assert (contact.hard_bounce, contact.validation_result, contact.validation_risk) == (
        True, "undeliverable", "high"
    )  # fmt: skip
    again.close()


def test_events_of_a_withheld_contact_are_recorded_but_never_queued_for_brevo(
    store: EngagementStore,
) -> None:
    def validated(event_id: str, email: str, result: str | None) -> dict[str, object]:
        record = tap_record("opened", at(0), event_id=event_id, recipient=email, message_id="m")
        record["validation"] = {"result": result, "risk": "high"} if result else None
        return record

    store.record_pushed([("known@x.com", False, frozenset())])  # Brevo has this one
    assert store.apply_events(facts(
        validated("1", "new@x.com", "undeliverable"),
        validated("2", "known@x.com", "do_not_send"),
        validated("3", "ok@x.com", "deliverable"),
    )) == 3  # fmt: skip
    assert store.events_withheld == 1
    # an unvalidated event later does not lift the verdict: still withheld, still not queued
    assert store.apply_events(facts(validated("4", "new@x.com", None))) == 1
    assert store.events_withheld == 2
    queued = sorted(key[0] for key, _ in store.pending_events())
    assert queued == ["2", "3"]
    assert store.apply_events(facts(validated("4", "new@x.com", None))) == 0  # still known
