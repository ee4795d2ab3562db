"""The Meltano SDK's standard tap test suite, run against a populated fake Mailgun."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun
from tap_mailgun.tap import TapMailgun
from tests.tap.conftest import API_KEY, DOMAIN, OTHER_DOMAIN


def _populated() -> FakeMailgun:
    """A small account with data in every stream."""
    fake = FakeMailgun(api_key=API_KEY)
    start = time.time() - 3 * 86400
    for domain in (DOMAIN, OTHER_DOMAIN):
        fake.add_domain(domain)
        fake.add_events(
            domain,
            [
                mailgun_event(kind, start + i * 600, recipient=f"user{i % 7}@x.com", tags=["news"])
                for i, kind in enumerate(["accepted", "delivered", "opened", "failed"] * 20)
            ],
        )
        fake.add_tag(domain, "news", "the newsletter")
        for kind, extra in (
            ("bounces", {"code": "550", "error": "gone"}),
            ("complaints", {}),
            ("unsubscribes", {"tags": ["news"]}),
        ):
            fake.add_suppression(
                domain,
                kind,
                {
                    "address": f"{kind}@x.com",
                    "created_at": "Mon, 01 Jan 2024 10:00:00 UTC",
                    **extra,
                },
            )
    fake.add_list("news@mg.example.com", name="News")
    fake.add_member("news@mg.example.com", {"address": "a@x.com", "vars": {"first_name": "A"}})
    return fake.start()


FAKE = _populated()

_StandardTests = get_tap_test_class(
    TapMailgun,
    config={
        "api_key": API_KEY,
        "base_url": FAKE.base_url,
        "domains": [DOMAIN, OTHER_DOMAIN],
        "max_retries": 1,
    },
    suite_config=SuiteConfig(max_records_limit=150),
)


class TestTapMailgunStandard(_StandardTests):
    """The SDK's tap, stream and attribute tests."""


@pytest.fixture(scope="module", autouse=True)
def _spec_clean() -> Iterator[None]:
    yield
    FAKE.stop()
    assert FAKE.violations == []
