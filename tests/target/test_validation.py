"""Validation before Brevo, end to end: `tap-mailgun | mailgun-validate | target-brevo`, the three
real console scripts piped together, against the fake Mailgun (whose /v4/address/validate
answers the verdicts each test chooses) and the fake Brevo, every request checked against the
vendors' specs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fakes.events import DOMAIN, mailgun_event
from fakes.mailgun import FakeMailgun
from tests.target.conftest import API_KEY, Run

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo

MAILGUN_KEY = "key-hygiene"
BIN = Path(sys.executable).parent
PEOPLE = ("gone@example.com", "info@example.com", "ok@example.com", "risky@example.com")


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """A fake Mailgun with one domain and two events per person, two hours old."""
    fake = FakeMailgun(api_key=MAILGUN_KEY)
    fake.add_domain(DOMAIN)
    sent = time.time() - 7200
    fake.add_events(
        DOMAIN,
        [
            mailgun_event(kind, sent + i, recipient=email, event_id=f"{kind}-{i}",
                          message_id=f"m{i}@{DOMAIN}")
            for i, email in enumerate(PEOPLE)
            for kind in ("delivered", "opened")
        ],
    )  # fmt: skip
    with fake:
        yield fake
    assert fake.violations == []


def pipeline(mailgun: FakeMailgun, brevo: FakeBrevo, tmp_path: Path, run: str) -> Run:
    """One scheduled run: tap | mapper | target, each its real console script, each with its
    config; the engagement store lives across runs, the validation cache is the run's own (a
    verdict cached for 30 days would hide the new verdict a test sets)."""
    configs = {
        "tap-mailgun": {"api_key": MAILGUN_KEY, "base_url": mailgun.base_url,
                        "domains": [DOMAIN], "max_retries": 2},
        "mailgun-validate": {"api_key": MAILGUN_KEY, "base_url": mailgun.base_url,
                             "validation_cache": str(tmp_path / f"validations-{run}.sqlite")},
        "target-brevo": {"api_key": API_KEY, "base_url": brevo.base_url + "/v3",
                         "engagement_store": str(tmp_path / "engagement.sqlite")},
    }  # fmt: skip
    argv = []
    for name, config in configs.items():
        path = tmp_path / f"{name}-{run}.json"
        path.write_text(json.dumps(config))
        argv.append([str(BIN / name), "--config", str(path)])
    tap = subprocess.Popen(argv[0], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    mapper = subprocess.Popen(
        argv[1], stdin=tap.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert tap.stdout is not None and mapper.stdout is not None
    tap.stdout.close()  # the mapper holds the pipe now
    target = subprocess.run(
        argv[2], stdin=mapper.stdout, capture_output=True, text=True, timeout=180, check=False
    )
    mapper.stdout.close()
    assert tap.wait(timeout=60) == 0 and mapper.wait(timeout=60) == 0
    brevo.settle()
    return Run(target.returncode, target.stdout, target.stderr)


def verdicts(brevo: FakeBrevo) -> dict[str, tuple[Any, Any]]:
    """MG_VALIDATION and MG_RISK of every contact Brevo has."""
    return {
        email: (c["attributes"].get("MG_VALIDATION"), c["attributes"].get("MG_RISK"))
        for email, c in brevo.contacts.items()
    }


def test_undeliverable_addresses_are_never_created_and_verdicts_reach_brevo(
    mailgun: FakeMailgun, brevo: FakeBrevo, tmp_path: Path
) -> None:
    mailgun.set_verdict("gone@example.com", "undeliverable", "high")
    mailgun.set_verdict("info@example.com", "do_not_send", "high", is_role_address=True)
    mailgun.set_verdict("risky@example.com", "catch_all", "medium")

    first = pipeline(mailgun, brevo, tmp_path, "1")

    assert first.returncode == 0, first.stderr
    assert verdicts(brevo) == {
        "ok@example.com": ("deliverable", "low"),
        "risky@example.com": ("catch_all", "medium"),
    }
    assert brevo.attributes["MG_VALIDATION"] == brevo.attributes["MG_RISK"] == "text"
    emailed = {e["identifiers"]["email_id"] for e in brevo.events}
    assert emailed == {"ok@example.com", "risky@example.com"}  # an event could create a contact
    assert first.summary["contacts_withheld"] == 2
    assert first.summary["events_withheld"] == 4  # delivered and opened, of each of the two
    assert first.summary["contacts_upserted"] == 2

    # Next run (no tap state: the same events again, applied once, their records validated
    # anew): Mailgun now says ok@ is undeliverable and gone@ deliverable. The latest verdict
    # wins: ok@, which Brevo has, is updated, never deleted; gone@ is created.
    mailgun.set_verdict("ok@example.com", "undeliverable", "high")
    mailgun.set_verdict("gone@example.com", "deliverable", "low")

    second = pipeline(mailgun, brevo, tmp_path, "2")

    assert second.returncode == 0, second.stderr
    assert verdicts(brevo) == {
        "gone@example.com": ("deliverable", "low"),
        "ok@example.com": ("undeliverable", "high"),
        "risky@example.com": ("catch_all", "medium"),
    }
    assert second.summary["contacts_withheld"] == 1  # info@, validated again: do_not_send
    assert brevo.violations == []
