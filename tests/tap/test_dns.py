"""`domains` records carry the state of each DNS record Mailgun checks (GET /v4/domains/{name})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tap_mailgun.records import dns_states
from tests.tap.conftest import DOMAIN, OTHER_DOMAIN, run_tap, tap_config

if TYPE_CHECKING:
    import pytest

    from fakes.mailgun import FakeMailgun


def test_each_domain_carries_spf_dkim_mx_and_tracking_states(mailgun: FakeMailgun) -> None:
    mailgun.set_dns(DOMAIN, spf="invalid", dkim="unknown")
    mailgun.set_dns(OTHER_DOMAIN, mx="invalid", tracking_cname="unknown")

    run = run_tap(tap_config(mailgun), "domains")

    dns = {r["name"]: r["dns"] for r in run.records["domains"]}
    assert dns == {
        DOMAIN: {"spf": "invalid", "dkim": "unknown", "mx": "valid", "tracking_cname": "valid"},
        OTHER_DOMAIN: {
            "spf": "valid",
            "dkim": "valid",
            "mx": "invalid",
            "tracking_cname": "unknown",
        },
    }
    assert len(mailgun.calls("GET", r"^/v4/domains/[^/]+$")) == 2


def test_details_that_cannot_be_read_leave_the_states_unknown_and_the_listing_synced(
    mailgun: FakeMailgun, caplog: pytest.LogCaptureFixture
) -> None:
    mailgun.fail_next(rf"GET /v4/domains/{DOMAIN}$", 503, times=10)

    run = run_tap(tap_config(mailgun, max_retries=1), "domains")

    dns = {r["name"]: r["dns"] for r in run.records["domains"]}
    assert dns[DOMAIN] == dict.fromkeys(("spf", "dkim", "mx", "tracking_cname"), "unknown")
    assert set(dns[OTHER_DOMAIN].values()) == {"valid"}
    assert len(mailgun.calls("GET", rf"^/v4/domains/{DOMAIN}$")) == 2  # a try and a retry
    assert f"DNS states of {DOMAIN} unknown" in caplog.text


def test_one_invalid_record_of_a_check_makes_the_check_invalid() -> None:
    valid = {"record_type": "MX", "valid": "valid", "value": "mxa.mailgun.org"}
    details = {
        "receiving_dns_records": [valid, {**valid, "valid": "invalid"}],
        "sending_dns_records": [
            {
                "record_type": "TXT",
                "name": "k1._domainkey.x.com",
                "value": "k=rsa",
                "valid": "valid",
            },
            {"record_type": "TXT", "name": "x.com", "value": "v=spf1 ~all", "valid": "bogus"},
        ],
    }
    assert dns_states(details) == {
        "spf": "unknown",
        "dkim": "valid",
        "mx": "invalid",
        "tracking_cname": "unknown",
    }
