"""Many domains at a time: ordered output, bounded concurrency, one shared 429 pause, and state
lookups that do not scan every partition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from fakes.mailgun import FakeMailgun
from tap_mailgun.prefetch import OrderedPrefetch
from tap_mailgun.sdk_compat import IndexedStateManager
from tests.tap.conftest import API_KEY, run_tap, tap_config

NAMES = [f"mg{i:02d}.example.net" for i in range(12)]


class TimedMailgun(FakeMailgun):
    """Notes when each request started and ended, and how many were in flight at most."""

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(api_key=API_KEY, latency=latency)
        self.spans: list[tuple[float, float, str, int]] = []  # start, end, path, status
        self.in_flight = self.most_in_flight = 0
        self._count = threading.Lock()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        statuses: list[int] = []

        def noting(status: str, *args: Any) -> Any:
            statuses.append(int(status.split()[0]))
            return start_response(status, *args)

        try:
            return super()._wsgi(environ, noting)
        finally:
            with self._count:
                self.in_flight -= 1
            path = environ.get("PATH_INFO", "")
            self.spans.append((started, time.monotonic(), path, statuses[0] if statuses else 0))


def account(fake: FakeMailgun, per_domain: int = 3) -> None:
    for name in NAMES:
        fake.add_domain(name)
        for k in range(per_domain):
            fake.add_suppression(
                name,
                "bounces",
                {
                    "address": f"u{k}@{name}",
                    "code": 550,
                    "error": "x",
                    "created_at": f"Mon, 01 Jan 2024 00:00:0{k} UTC",
                },
            )


def test_domains_are_read_several_at_a_time_and_emitted_in_order() -> None:
    fake = TimedMailgun(latency=0.2)
    account(fake)
    with fake:
        config = tap_config(fake, domains=NAMES, concurrent_domains=4)
        started = time.monotonic()
        run = run_tap(config, "bounces")
        took = time.monotonic() - started
        assert fake.violations == []

    # 12 domains, 2 requests each (a page, the empty page that ends it), 0.2 s a request:
    # 4.8 s one at a time; 4 at a time, about a quarter.
    assert 1 < fake.most_in_flight <= 4
    assert took < 3.0
    # One ordered stream: each domain's records together, in the partitions' order, and each
    # STATE covers only domains whose records came before it.
    seen = [r["domain"] for r in run.records["bounces"]]
    assert seen == [name for name in NAMES for _ in range(3)]
    emitted: set[str] = set()
    for message in run.messages:
        if message["type"] == "RECORD":
            emitted.add(message["record"]["domain"])
        elif message["type"] == "STATE":
            parts = message["value"]["bookmarks"].get("bounces", {}).get("partitions", [])
            bookmarked = {p["context"]["domain"] for p in parts if "replication_key_value" in p}
            assert bookmarked <= emitted
    assert not run.failures


def test_one_at_a_time_when_the_setting_says_so() -> None:
    fake = TimedMailgun(latency=0.05)
    account(fake, per_domain=1)
    with fake:
        run = run_tap(tap_config(fake, domains=NAMES, concurrent_domains=1), "bounces")
    assert fake.most_in_flight == 1
    assert len(run.records["bounces"]) == len(NAMES)


def test_a_429_pauses_every_worker() -> None:
    fake = TimedMailgun()
    account(fake, per_domain=1)
    fake.fail_next(rf"GET /v3/{NAMES[1]}/bounces$", 429, {"message": "slow"}, {"Retry-After": "2"})
    with fake:
        run = run_tap(tap_config(fake, domains=NAMES, concurrent_domains=3), "bounces")
        assert fake.violations == []

    (limited,) = [s for s in fake.spans if s[3] == 429]
    # Every request sent once the 429 had reached the tap (half a second, on a loaded
    # machine) waited out its Retry-After, whichever worker sent it.
    later = [s for s in fake.spans if s[0] > limited[1] + 0.5]
    assert later and all(start >= limited[1] + 1.9 for start, *_ in later)
    assert len(run.records["bounces"]) == len(NAMES) and not run.failures


def test_a_failing_domain_is_reported_and_the_others_finish() -> None:
    fake = TimedMailgun()
    account(fake, per_domain=1)
    fake.fail_next(rf"GET /v3/{NAMES[3]}/bounces$", 500, {"message": "boom"}, times=10)
    with fake:
        run = run_tap(
            tap_config(fake, domains=NAMES, concurrent_domains=4, max_retries=0), "bounces"
        )

    assert {r["domain"] for r in run.records["bounces"]} == set(NAMES) - {NAMES[3]}
    (failure,) = run.failures
    assert f"domain={NAMES[3]}" in failure
    parts = run.state["bookmarks"]["bounces"]["partitions"]
    failed = [p for p in parts if p["context"]["domain"] == NAMES[3]]
    assert all("replication_key_value" not in p for p in failed)


def test_domain_details_are_read_several_at_a_time() -> None:
    fake = TimedMailgun(latency=0.1)
    account(fake, per_domain=0)
    with fake:
        run = run_tap(tap_config(fake, concurrent_domains=6), "domains")
    assert [r["name"] for r in run.records["domains"]] == NAMES
    assert all(r["dns"]["spf"] == "valid" for r in run.records["domains"])
    assert 1 < fake.most_in_flight <= 6


def test_prefetch_keeps_order_bounds_what_it_holds_and_raises_where_it_failed() -> None:
    produced: list[tuple[str, int]] = []

    def fetch(key: str) -> Iterable[int]:
        if key == "c":
            raise RuntimeError("c failed")
        for i in range(50):
            produced.append((key, i))
            yield i

    prefetch = OrderedPrefetch(["a", "b", "c", "d", "e"], fetch, workers=2, buffered=5)
    time.sleep(0.3)
    # Two keys at a time, each holding at most 5 items (+1 its worker is putting).
    assert len(produced) <= 2 * 6
    assert list(prefetch.items("a")) == list(range(50))
    assert list(prefetch.items("b")) == list(range(50))
    with pytest.raises(RuntimeError, match="c failed"):
        list(prefetch.items("c"))
    assert list(prefetch.items("e")) == list(range(50))  # "d" skipped: dropped unread
    prefetch.close()


def test_state_lookups_do_not_scan_the_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    scans = 0

    def counting(*args: Any) -> Any:
        nonlocal scans
        scans += 1
        raise AssertionError("scanned every partition")

    # singer-sdk's linear scan, which IndexedStateManager must never need.
    monkeypatch.setattr("singer_sdk.helpers._state._find_in_partitions_list", counting)
    state: dict[str, Any] = {}
    manager = IndexedStateManager(stream_name="bounces", tap_state=state)
    contexts = [{"domain": f"d{i}.com"} for i in range(3000)]
    for context in contexts:
        manager.get_context_state(context)["replication_key_value"] = context["domain"]
    for context in reversed(contexts):
        assert manager.get_context_state(context)["replication_key_value"] == context["domain"]
    assert scans == 0
    monkeypatch.undo()
    # The same layout as the SDK's own: one {"context": ...} per partition, in order.
    partitions = state["bookmarks"]["bounces"]["partitions"]
    assert [p["context"] for p in partitions] == contexts
    # A state with a partition twice is refused, as the SDK refuses it.
    partitions.append({"context": {"domain": "d0.com"}})
    with pytest.raises(ValueError, match="duplicate"):
        manager.get_context_state({"domain": "d0.com"})


def test_the_state_does_not_grow_with_history() -> None:
    """Domains removed from the account and deleted mailing lists leave nothing behind."""
    fake = FakeMailgun(api_key=API_KEY)
    account(fake, per_domain=1)
    fake.add_list("news@mg.example.net")
    fake.add_member("news@mg.example.net", {"address": "a@x.com"})
    with fake:
        config = tap_config(fake, domains=[])
        run1 = run_tap(config, "bounces", "mailing_lists", "list_members")
        fake.domains.pop(NAMES[0])
        fake.lists.clear()
        fake.add_list("other@mg.example.net")
        run2 = run_tap(config, "bounces", "mailing_lists", "list_members", state=run1.state)
        assert fake.violations == []

    def domains(run: Any) -> set[str]:
        parts = run.state["bookmarks"]["bounces"]["partitions"]
        return {p["context"]["domain"] for p in parts}

    assert domains(run1) == set(NAMES)
    assert domains(run2) == set(NAMES) - {NAMES[0]}
    assert [m["address"] for m in run1.records["list_members"]] == ["a@x.com"]
    # A list's members are read whole every run: no state per list, ever.
    assert run1.state["bookmarks"]["list_members"] == {}
    assert run2.state["bookmarks"]["list_members"] == {}
