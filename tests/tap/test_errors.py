"""Retries and errors: 429 with Retry-After, 5xx, bounded tries, 401, 404, regions."""

from __future__ import annotations

import pytest
import requests
from singer_sdk.exceptions import RetriableAPIError
from werkzeug.wrappers import Request, Response

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun
from tap_mailgun.client import (
    MailgunAuthError,
    MailgunStream,
    resolve_base_url,
    retry_hint_seconds,
)
from tap_mailgun.tap import TapMailgun
from tests.tap.conftest import API_KEY, DOMAIN, OTHER_DOMAIN, hours_ago, run_tap, tap_config


def test_429_is_retried_after_the_wait_the_server_asks(mailgun: FakeMailgun) -> None:
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", hours_ago(2))])
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/events$", 429, {"message": "Too Many Requests"}, {"Retry-After": "0"}, 2
    )

    run = run_tap(tap_config(mailgun, domains=[DOMAIN], event_source="events"), "events")

    assert len(run.records["events"]) == 1
    assert [c.status for c in mailgun.calls("GET", rf"^/v3/{DOMAIN}/events$")] == [429, 429, 200]


def test_5xx_is_retried(mailgun: FakeMailgun) -> None:
    mailgun.add_suppression(
        DOMAIN,
        "bounces",
        {
            "address": "a@x.com",
            "code": 550,
            "error": "x",
            "created_at": "Mon, 01 Jan 2024 00:00:00 UTC",
        },
    )
    mailgun.fail_next(rf"GET /v3/{DOMAIN}/bounces", 502, {"message": "Bad Gateway"})

    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "bounces")

    assert [r["address"] for r in run.records["bounces"]] == ["a@x.com"]
    # the failed try, and the page (short: it ends the listing)
    assert [c.status for c in mailgun.calls("GET", rf"^/v3/{DOMAIN}/bounces")] == [502, 200]


def bounce(address: str) -> dict[str, object]:
    return {
        "address": address,
        "code": 550,
        "error": "x",
        "created_at": "Mon, 01 Jan 2024 00:00:00 UTC",
    }


def test_tries_are_bounded_and_the_other_domains_still_sync(mailgun: FakeMailgun) -> None:
    mailgun.add_suppression(DOMAIN, "bounces", bounce("welcome@x.com"))
    mailgun.add_suppression(OTHER_DOMAIN, "bounces", bounce("receipt@x.com"))
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/bounces", 500, {"message": "boom"}, {"Retry-After": "0"}, times=10
    )

    run = run_tap(tap_config(mailgun, max_retries=3), "bounces")

    assert len(mailgun.calls("GET", rf"^/v3/{DOMAIN}/bounces")) == 4  # the try and 3 retries
    assert [r["address"] for r in run.records["bounces"]] == ["receipt@x.com"]
    (failure,) = run.failures
    assert "bounces (domain=mg.example.com)" in failure and "500" in failure


def test_wait_hints_come_from_retry_after_or_the_body(mailgun: FakeMailgun) -> None:
    url = f"{mailgun.base_url}/v4/domains"
    auth = ("api", API_KEY)
    mailgun.fail_next("GET /v4/domains", 429, {"message": "slow down"}, {"Retry-After": "7"})
    mailgun.fail_next("GET /v4/domains", 429, {"message": "slow down", "retry-seconds": 3})
    mailgun.fail_next("GET /v4/domains", 503, {"message": "unavailable"})
    with_header, with_body, without = (requests.get(url, auth=auth, timeout=5) for _ in range(3))

    assert retry_hint_seconds(with_header) == 7
    assert retry_hint_seconds(with_body) == 3
    assert retry_hint_seconds(without) is None

    stream = TapMailgun(config=tap_config(mailgun)).streams["domains"]
    assert isinstance(stream, MailgunStream)
    waits = stream.backoff_wait_generator()
    next(waits)  # backoff primes the generator before the first failure
    assert waits.send(RetriableAPIError("429", with_header)) == 7
    assert waits.send(RetriableAPIError("429", with_body)) == 3
    exponential = [waits.send(RetriableAPIError("503", without)) for _ in range(200)]
    # Equal jitter under a doubling cap (up to 120 s): each wait is at least half its
    # cap, so a run of retries cannot all be near zero and spend every try in a short blip.
    caps = [min(120, 2 ** (n + 2)) for n in range(200)]  # 3rd try onwards: 4, 8, 16 ...
    assert all(cap / 2 <= w <= cap for w, cap in zip(exponential, caps, strict=True))
    assert len({round(w, 6) for w in exponential[10:]}) > 1  # still jittered


def test_401_names_the_host_and_region_and_stops_the_run(mailgun: FakeMailgun) -> None:
    config = tap_config(mailgun, api_key="key-wrong")

    with pytest.raises(MailgunAuthError) as refused:
        run_tap(config, "tags")

    message = str(refused.value)
    assert "refused the API key (401)" in message
    assert mailgun.base_url in message and "region us" in message
    assert "MAILGUN_API_KEY" in message
    assert "key-wrong" not in message
    assert len(mailgun.calls()) == 1, "a refused key is not retried"


def test_404_for_a_domain_suggests_the_other_region(mailgun: FakeMailgun) -> None:
    mailgun.add_suppression(DOMAIN, "bounces", bounce("welcome@x.com"))
    config = tap_config(mailgun, domains=["mg.missing.com", DOMAIN], region="us")

    run = run_tap(config, "bounces")

    assert [r["address"] for r in run.records["bounces"]] == ["welcome@x.com"]
    (failure,) = run.failures
    assert "no domain 'mg.missing.com'" in failure
    assert "set region: eu" in failure


def test_regions_choose_the_api_host() -> None:
    assert resolve_base_url({"region": "eu"}) == "https://api.eu.mailgun.net"
    assert resolve_base_url({"region": "us"}) == "https://api.mailgun.net"
    assert resolve_base_url({}) == "https://api.mailgun.net"
    assert resolve_base_url({"region": "eu", "base_url": "http://127.0.0.1:1/"}) == (
        "http://127.0.0.1:1"
    )
    with pytest.raises(ValueError, match="'us' or 'eu'"):
        resolve_base_url({"region": "ap"})


def test_an_eu_domain_read_with_the_us_region_is_explained() -> None:
    """Two fakes stand for the two regions; the domain lives only in the EU one."""
    with FakeMailgun(api_key=API_KEY) as us, FakeMailgun(api_key=API_KEY) as eu:
        eu.add_domain("mg.example.eu")
        eu.add_suppression("mg.example.eu", "bounces", bounce("hallo@x.com"))
        base = {"api_key": API_KEY, "domains": ["mg.example.eu"]}

        wrong = run_tap({**base, "base_url": us.base_url, "region": "eu"}, "bounces")
        right = run_tap({**base, "base_url": eu.base_url, "region": "eu"}, "bounces")

        assert "set region: us" in wrong.failures[0]
        assert f"{us.base_url} (base_url, which overrides region eu)" in wrong.failures[0]
        assert [r["address"] for r in right.records["bounces"]] == ["hallo@x.com"]
        assert not right.failures
        assert us.violations == [] and eu.violations == []


class TruncatingMailgun(FakeMailgun):
    """Answers the first `times` event listings of `domain` with 200 and a body cut short,
    as a proxy or a dropped connection can."""

    def __init__(self, domain: str, times: int) -> None:
        super().__init__(api_key=API_KEY)
        self.truncate_domain = domain
        self.times = times

    def list_events(self, request: Request, domain: str) -> Response:
        if domain == self.truncate_domain and self.times > 0:
            self.times -= 1
            return Response('{"items": [{"id": "ev', 200, content_type="application/json")
        return super().list_events(request, domain)


def test_a_200_whose_body_is_not_json_is_retried() -> None:
    fake = TruncatingMailgun(DOMAIN, times=1)
    fake.add_domain(DOMAIN)
    fake.add_events(DOMAIN, [mailgun_event("delivered", hours_ago(2))])
    with fake:
        run = run_tap(tap_config(fake, domains=[DOMAIN], event_source="events"), "events")
        assert fake.violations == []
        assert len(fake.calls("GET", rf"^/v3/{DOMAIN}/events$")) == 2

    assert len(run.records["events"]) == 1
    assert not run.failures


def test_a_body_that_stays_broken_fails_only_its_domain() -> None:
    fake = TruncatingMailgun(DOMAIN, times=10)
    for domain in (DOMAIN, OTHER_DOMAIN):
        fake.add_domain(domain)
        fake.add_events(domain, [mailgun_event("delivered", hours_ago(2))])
    with fake:
        run = run_tap(tap_config(fake, max_retries=1, event_source="events"), "events")
        assert fake.violations == []

    assert [r["domain"] for r in run.records["events"]] == [OTHER_DOMAIN]
    (failure,) = run.failures
    assert f"domain={DOMAIN}" in failure and "not a JSON object" in failure
