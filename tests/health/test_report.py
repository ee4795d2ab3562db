"""The real `mailgun-health` console script against the fake Mailgun: verdicts, exit codes,
the HTML page, and the pure rules that judge a domain."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun
from mailgun_health.health import Account, assess, findings, worst_tags

API_KEY = "key-health"
HEALTH = Path(sys.executable).with_name("mailgun-health")
TAP = Path(sys.executable).with_name("tap-mailgun")
CLEAN, NOISY = "clean.example.com", "noisy.example.com"
UNTIL = "2026-10-30"


def day(n: int, hour: int = 12) -> float:
    """An epoch on 2026-10-{n}."""
    return datetime(2026, 10, n, hour, tzinfo=timezone.utc).timestamp()


def send(fake: FakeMailgun, domain: str, n: int, at: float, outcome: str, tag: str) -> None:
    """One message: accepted, then delivered (and maybe complained) or hard-bounced."""
    who = f"p{n}@example.net"
    events = [mailgun_event("accepted", at, recipient=who, tags=[tag])]
    if outcome == "bounce":
        events.append(mailgun_event("failed", at + 1, recipient=who, tags=[tag]))
    else:
        events.append(mailgun_event("delivered", at + 1, recipient=who, tags=[tag]))
    if outcome == "complaint":
        events.append(mailgun_event("complained", at + 60, recipient=who, tags=[tag]))
    fake.add_events(domain, events)


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """Two domains over ten days: CLEAN sends 20 a day, all delivered, 1 bounce; NOISY sends 40
    a day, 1 % complaints, all from the `promo` tag."""
    fake = FakeMailgun(api_key=API_KEY)
    for name in (CLEAN, NOISY):
        fake.add_domain(name)
    for d in range(10, 20):
        for n in range(20):
            outcome = "bounce" if (d, n) == (12, 0) else "delivered"
            send(fake, CLEAN, n, day(d) + n, outcome, "receipt")
        for n in range(40):
            tag = "promo" if n % 2 else "news"
            outcome = "complaint" if n == 1 and d % 2 == 0 else "delivered"
            send(fake, NOISY, n, day(d) + n, outcome, tag)
    with fake:
        yield fake
    assert fake.violations == []


def health(
    tmp_path: Path, *args: str, config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script; `config` is written as tap-mailgun's config file."""
    extra: list[str] = []
    if config is not None:
        (tmp_path / "tap.json").write_text(json.dumps(config))
        extra = ["--config", str(tmp_path / "tap.json")]
    return subprocess.run(
        [str(HEALTH), *extra, "--until", UNTIL, "--output", str(tmp_path / "report.html"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def config_for(fake: FakeMailgun, *domains: str) -> dict[str, Any]:
    """tap-mailgun's config for the fake."""
    return {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "domains": list(domains),
        "max_retries": 0,
    }


def test_a_domain_over_the_complaint_limit_fails_the_check(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    result = health(tmp_path, config=config_for(mailgun, CLEAN, NOISY))

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"{CLEAN}: healthy" in lines
    assert f"{NOISY}: a threshold crossed" in lines
    # 5 complaints of 400 delivered: 1.25 %, over Gmail's and Yahoo's 0.3 %.
    assert any(
        line.startswith("  fail: Spam complaints (of delivered): 1.25 % over 30 days")
        for line in lines
    )
    assert lines[-1] == f"Report: {tmp_path / 'report.html'}"
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 8  # four rates for each of two domains
    assert page.count('class="threshold"') == 4  # 0.3 % and 0.1 % on each complaint chart
    assert "https://support.google.com/a/answer/81126" in page
    assert "https://senders.yahooinc.com/best-practices/" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # The worst tag of the noisy domain is the one the complaints came from.
    noisy = page[page.index(f'id="{NOISY}"') :]
    worst = noisy[noisy.index("Tags with the worst rates") :]
    assert worst.index("<td>promo</td>") < worst.index("<td>news</td>")


def test_healthy_domains_exit_zero_and_an_invalid_spf_exits_one(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    healthy = health(tmp_path, config=config_for(mailgun, CLEAN))
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.splitlines()[0] == f"{CLEAN}: healthy"

    mailgun.set_dns(CLEAN, spf="invalid", tracking_cname="unknown")
    broken = health(tmp_path, config=config_for(mailgun, CLEAN))
    assert broken.returncode == 1
    assert "  fail: DNS SPF invalid (Gmail and Yahoo require SPF and DKIM)" in broken.stdout
    assert "  warn: DNS TRACKING CNAME unknown" in broken.stdout


def test_a_singer_file_of_the_taps_streams_gives_the_same_verdicts(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    config = {**config_for(mailgun, CLEAN, NOISY), "start_date": "2026-10-01T00:00:00Z"}
    (tmp_path / "tap.json").write_text(json.dumps(config))
    singer = tmp_path / "account.singer"
    with singer.open("w") as out:
        tapped = subprocess.run(
            [str(TAP), "--config", str(tmp_path / "tap.json")],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    assert tapped.returncode == 0, tapped.stderr[-2000:]

    result = health(tmp_path, "--input", str(singer))

    assert result.returncode == 1
    assert f"{NOISY}: a threshold crossed" in result.stdout.splitlines()


def test_an_account_that_cannot_be_read_exits_two_with_one_line(tmp_path: Path) -> None:
    unreachable = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9", "max_retries": 0}
    result = health(tmp_path, config=unreachable)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("mailgun-health: could not read the account: ")
    assert "Could not connect to Mailgun at http://127.0.0.1:9" in result.stderr
    assert not (tmp_path / "report.html").exists()

    no_key = health(tmp_path)
    assert no_key.returncode == 2
    assert "MAILGUN_HEALTH_API_KEY" in no_key.stderr

    garbage = tmp_path / "garbage.singer"
    garbage.write_text("not json\n")
    assert health(tmp_path, "--input", str(garbage)).returncode == 2


# --- the rules, without a server ------------------------------------------------------------
def _metrics(domain: str, day_: str, delivered: int, complained: int) -> dict[str, Any]:
    return {
        "domain": domain,
        "time": f"{day_}T00:00:00+00:00",
        "accepted_count": delivered,
        "delivered_count": delivered,
        "hard_bounces_count": 0,
        "complained_count": complained,
        "unsubscribed_count": 0,
    }


@pytest.mark.parametrize(
    ("complained", "levels", "days_over"),
    [
        (0, [], 0),
        (1, ["warn"], 0),  # 0.1 % of the window reaches Gmail's target
        (2, ["warn"], 1),  # 0.2 %: a warning; its one day at 0.4 % is shown, not judged
        (3, ["fail"], 0),  # 0.3 %: the limit is reached (the day need not be told apart)
    ],
)
def test_complaints_over_the_window_are_judged_against_gmail_and_yahoo(
    complained: int, levels: list[str], days_over: int
) -> None:
    # 1000 delivered over two days; the complaints all on the second day.
    valid = dict.fromkeys(("spf", "dkim", "mx", "tracking_cname"), "valid")
    account = Account(
        domains=[{"name": "a.com", "state": "active", "dns": valid}],
        domain_metrics=[
            _metrics("a.com", "2026-10-01", 500, 0),
            _metrics("a.com", "2026-10-02", 500, complained),
        ],
    )

    (domain,) = assess(account, date(2026, 10, 2), days=2)

    overall = [f.level for f in domain.findings if "over 2 days" in f.text]
    assert overall == levels
    assert domain.series["complaint_rate"].daily == [0.0, complained / 500]
    assert len([f for f in domain.findings if "1 day(s) at or above 0.3 %" in f.text]) == days_over
    assert domain.status == {0: "healthy", 1: "watch", 2: "watch", 3: "crossed"}[complained]


def test_worst_tags_rank_complaints_then_bounces() -> None:
    rows = {
        "a": [
            {
                "accepted_count": 100,
                "delivered_count": 100,
                "complained_count": 0,
                "hard_bounces_count": 5,
            }
        ],
        "b": [{"accepted_count": 100, "delivered_count": 100, "complained_count": 1}],
        "c": [{"accepted_count": 100, "delivered_count": 100}],
    }
    assert [t.tag for t in worst_tags(rows)] == ["b", "a", "c"]
    assert findings(
        {}, {"spf": "valid", "dkim": "invalid", "mx": "unknown", "tracking_cname": "valid"}
    ) == [
        findings({}, {"dkim": "invalid"})[0],
        findings({}, {"mx": "unknown"})[0],
    ]
