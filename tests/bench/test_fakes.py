"""The benchmark's indexed fake Mailgun must answer exactly as the fake Mailgun does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from bench.fakes import IndexedFakeMailgun
from fakes.mailgun import FakeMailgun
from fakes.traffic import Traffic, TrafficSpec, load

AUTH = ("api", "key-test")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[FakeMailgun, FakeMailgun]]:
    """The plain and the indexed fake, loaded with the same seeded traffic."""
    plain, indexed = FakeMailgun(validate=False), IndexedFakeMailgun(validate=False)
    spec = TrafficSpec(messages=700, recipients=120, seed=11)
    for fake in (plain, indexed):
        load(fake, Traffic(spec))
        fake.start()
    yield plain, indexed
    for fake in (plain, indexed):
        fake.stop()
        assert fake.violations == []


def _traverse(fake: FakeMailgun, domain: str, params: dict[str, Any]) -> list[list[str]]:
    """Every page of a query, as lists of event ids, following `paging.next` to the empty page."""
    pages: list[list[str]] = []
    url = f"{fake.base_url}/v3/{domain}/events"
    query: dict[str, Any] | None = params
    while True:
        response = requests.get(url, params=query, auth=AUTH, timeout=10)
        response.raise_for_status()
        body = response.json()
        pages.append([e["id"] for e in body["items"]])
        if not body["items"]:
            return pages
        url, query = body["paging"]["next"], None


@pytest.mark.parametrize(
    "params",
    [
        {"ascending": "yes", "limit": 300},
        {"ascending": "no", "limit": 50},
        {"ascending": "yes", "limit": 100, "event": "failed OR complained"},
        {"ascending": "yes", "limit": 300, "begin": "1791417600", "end": "1792022400"},
        {"ascending": "no", "limit": 77, "begin": "Fri, 10 Oct 2026 00:00:00 +0000"},
    ],
)
def test_indexed_fake_pages_like_the_fake(
    pair: tuple[FakeMailgun, FakeMailgun], params: dict[str, Any]
) -> None:
    plain, indexed = pair
    for domain in plain.domains:
        expected = _traverse(plain, domain, params)
        assert sum(len(p) for p in expected) > 0
        assert _traverse(indexed, domain, params) == expected


def test_indexed_fake_sees_events_added_later() -> None:
    indexed = IndexedFakeMailgun(validate=False)
    load(indexed, Traffic(TrafficSpec(messages=300, recipients=50, seed=5)))
    with indexed:
        domain = next(iter(indexed.domains))
        query = {"ascending": "yes", "limit": 300}
        before = sum(len(p) for p in _traverse(indexed, domain, query))
        late = dict(indexed.events[domain][0], id="late-event", timestamp=1790812800.5)
        indexed.add_events(domain, [late])
        pages = _traverse(indexed, domain, query)
    assert sum(len(p) for p in pages) == before + 1
    assert "late-event" in pages[0]
    assert indexed.violations == []


@pytest.mark.parametrize("resolution", ["hour", "day", "month"])
@pytest.mark.parametrize("dimensions", [["time"], ["time", "domain"], ["time", "tag"], ["tag"]])
def test_indexed_fake_metrics_like_the_fake(
    pair: tuple[FakeMailgun, FakeMailgun], resolution: str, dimensions: list[str]
) -> None:
    body = {
        "resolution": resolution,
        "dimensions": dimensions,
        "metrics": ["accepted_count", "delivered_count", "opened_rate", "permanent_failed_count"],
        "start": "Wed, 30 Sep 2026 00:00:00 +0000",
        "end": "Sun, 01 Nov 2026 00:00:00 +0000",
        "pagination": {"skip": 0, "limit": 1500},
    }
    answers = [
        requests.post(f"{fake.base_url}/v1/analytics/metrics", json=body, auth=AUTH, timeout=10)
        for fake in pair
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["items"], "the window must hold events"
    assert answers[1].json() == answers[0].json()


def test_latency_delays_every_answer_and_concurrent_ones_overlap() -> None:
    latency = 0.3
    with FakeMailgun(validate=False, latency=latency) as fake:
        url = f"{fake.base_url}/v4/domains"
        started = time.monotonic()
        assert requests.get(url, auth=AUTH, timeout=10).status_code == 200
        alone = time.monotonic() - started
        with ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            codes = list(pool.map(lambda _: requests.get(url, auth=AUTH, timeout=10), range(4)))
            together = time.monotonic() - started
        fake.latency = 0.0  # settable at any time: the next answer comes at once
        started = time.monotonic()
        requests.get(url, auth=AUTH, timeout=10)
        undelayed = time.monotonic() - started
    assert alone >= latency
    assert [c.status_code for c in codes] == [200] * 4
    # Four requests in parallel take one latency, not four: each waits in its own thread.
    assert latency <= together < 2 * latency
    assert undelayed < latency


def _traverse_logs(fake: FakeMailgun, body: dict[str, Any]) -> list[list[str]]:
    """Every page of a logs query, as lists of event ids, following tokens to the last page."""
    pages: list[list[str]] = []
    paging = dict(body["pagination"])
    while True:
        response = requests.post(
            f"{fake.base_url}/v1/analytics/logs",
            json={**body, "pagination": paging},
            auth=AUTH,
            timeout=10,
        )
        response.raise_for_status()
        answer = response.json()
        pages.append([e["id"] for e in answer["items"]])
        token = answer["pagination"].get("next")
        if not token:
            return pages
        paging = {**paging, "token": token}


@pytest.mark.parametrize(
    "body",
    [
        {"pagination": {"sort": "timestamp:asc", "limit": 100}},
        {"pagination": {"sort": "timestamp:desc", "limit": 37}},
        {"pagination": {"sort": "timestamp:asc", "limit": 100}, "events": ["failed", "opened"]},
        {
            "pagination": {"sort": "timestamp:asc", "limit": 100},
            "start": "Wed, 07 Oct 2026 00:00:00 +0000",
            "end": "Wed, 14 Oct 2026 00:00:00 +0000",
        },
    ],
)
def test_indexed_fake_pages_logs_like_the_fake(
    pair: tuple[FakeMailgun, FakeMailgun], body: dict[str, Any]
) -> None:
    plain, indexed = pair
    body = {"start": "Tue, 01 Sep 2026 00:00:00 +0000", **body}
    domain = next(iter(plain.domains))
    filtered = {**body, "filter": {"AND": [_domain_is(domain)]}}
    for query in (body, filtered):
        expected = _traverse_logs(plain, query)
        assert sum(len(p) for p in expected) > 0
        assert _traverse_logs(indexed, query) == expected


def _domain_is(domain: str) -> dict[str, Any]:
    return {
        "attribute": "domain",
        "comparator": "=",
        "values": [{"label": domain, "value": domain}],
    }
