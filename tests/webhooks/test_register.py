"""`tap-mailgun-webhooks register` as users run it: the console script against the fake Mailgun.

The fake checks every request against Mailgun's API description (specs/), keeps each domain's
webhooks as Mailgun does (URLs per event type, at most 3) and adds a URL with v4's POST
without touching the others.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.mailgun import FakeMailgun
from fakes.receiver_process import BIN
from mailgun_webhooks.register import EVENT_TYPES, Plan, plan, registered_urls

API_KEY = "key-register-0123456789"
URL = "https://hooks.example.com/webhooks/mailgun"


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    """A fake Mailgun account; every request it got must have been valid."""
    fake = FakeMailgun(api_key=API_KEY)
    with fake:
        yield fake
    assert fake.violations == []


def register(
    fake: FakeMailgun, *args: str, key: str = API_KEY, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`tap-mailgun-webhooks register --url URL --base-url <fake> ARGS` with the key in the env."""
    environ = {**os.environ, "MAILGUN_API_KEY": key, **(env or {})}
    return subprocess.run(
        [
            str(BIN / "tap-mailgun-webhooks"),
            "register",
            "--url",
            URL,
            "--base-url",
            fake.base_url,
            *args,
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def posts(fake: FakeMailgun) -> list[str]:
    """The domains a webhook POST was made for, in order."""
    return [r.path.split("/")[3] for r in fake.calls("POST", r"/webhooks$")]


def test_plan_adds_only_what_is_missing_and_respects_the_limit() -> None:
    registered = registered_urls(
        {
            "webhooks": {
                "delivered": {"urls": [URL]},
                "opened": {"urls": ["https://a", "https://b"]},
                "clicked": {"urls": ["https://a", "https://b", "https://c"]},
                "complained": {"url": "https://old-shape"},
                "unsubscribed": None,
            }
        }
    )
    assert registered["complained"] == ["https://old-shape"]
    assert plan(registered, URL) == Plan(
        add=("permanent_fail", "temporary_fail", "complained", "unsubscribed", "opened"),
        full=("clicked",),
    )
    everywhere = {kind: ["https://a", URL] for kind in EVENT_TYPES}
    assert plan(everywhere, URL) == Plan(add=(), full=())


def test_every_domain_of_a_large_account_gets_the_url_and_keeps_its_others(
    mailgun: FakeMailgun,
) -> None:
    # 1,003 domains: more than one page of GET /v4/domains (1,000 at most).
    names = [f"d{i:04d}.example.com" for i in range(1003)]
    for name in names:
        mailgun.add_domain(name)
    mailgun.add_domain("off.example.com", state="disabled")
    for name in names[3:]:  # most are done already: they must be left alone
        for kind in EVENT_TYPES:
            mailgun.add_webhook(name, kind, URL)
    mailgun.add_webhook(names[0], "delivered", "https://crm.example.net/hook")
    mailgun.add_webhook(names[1], "clicked", "https://a.example", "https://b.example",
                        "https://c.example")  # fmt: skip

    done = register(mailgun)

    assert done.returncode == 1, done.stderr  # one domain could not take every event type
    pages = mailgun.calls("GET", "^/v4/domains$")
    assert [(r.query["skip"], r.query["limit"]) for r in pages] == [
        (["0"], ["1000"]),
        (["1000"], ["1000"]),
    ]
    assert sorted(posts(mailgun)) == names[:3]  # one POST per domain that needed one
    assert mailgun.webhooks[names[0]]["delivered"] == ["https://crm.example.net/hook", URL]
    for kind in EVENT_TYPES:
        assert URL in mailgun.webhooks[names[2]][kind]
    assert "clicked" not in posts(mailgun)  # nothing beyond Mailgun's limit was even tried
    assert mailgun.webhooks[names[1]]["clicked"] == [
        "https://a.example",
        "https://b.example",
        "https://c.example",
    ]
    assert all(URL in mailgun.webhooks[names[1]][k] for k in EVENT_TYPES if k != "clicked")
    assert "off.example.com" not in mailgun.webhooks
    lines = done.stdout.splitlines()
    assert f"{names[1]}: added {URL} for" in lines[1]
    assert "clicked already has 3 other URLs (Mailgun's limit)" in lines[1]
    assert lines[-1] == "register: 1002 of 1003 domain(s) up to date; 1 incomplete (see above)"
    assert "Traceback" not in done.stderr


def test_dry_run_changes_nothing_and_a_second_run_nothing_more(mailgun: FakeMailgun) -> None:
    for name in ("a.example.com", "b.example.com"):
        mailgun.add_domain(name)
    mailgun.add_webhook("b.example.com", "opened", URL)

    dry = register(mailgun, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert posts(mailgun) == []
    assert f"a.example.com: would add {URL} for {', '.join(EVENT_TYPES)}" in dry.stdout
    assert "b.example.com: would add" in dry.stdout
    assert "opened" not in dry.stdout.split("b.example.com: would add", 1)[1].splitlines()[0]

    first = register(mailgun)
    assert first.returncode == 0, first.stderr
    assert sorted(posts(mailgun)) == ["a.example.com", "b.example.com"]
    again = register(mailgun)
    assert again.returncode == 0, again.stderr
    assert len(posts(mailgun)) == 2  # no POST the second time
    assert "a.example.com: already registered" in again.stdout
    for name in ("a.example.com", "b.example.com"):
        assert {k: v.count(URL) for k, v in mailgun.webhooks[name].items()} == dict.fromkeys(
            EVENT_TYPES, 1
        )


def test_rate_limits_are_retried_and_a_lost_answer_is_not_posted_twice(
    mailgun: FakeMailgun,
) -> None:
    for name in ("a.example.com", "b.example.com"):
        mailgun.add_domain(name)
    limited = {"Retry-After": "0"}
    mailgun.fail_next("GET /v4/domains", 429, headers=limited)
    mailgun.fail_next("GET /v3/domains/a.example.com/webhooks", 429, headers=limited, times=2)
    mailgun.fail_next("POST /v4/domains/a.example.com/webhooks", 429, headers=limited)
    # b: Mailgun adds the webhooks, but the answer is lost (a 502 from its proxy).
    mailgun.fail_next("POST /v4/domains/b.example.com/webhooks", 502, carried_out=True)

    done = register(mailgun, "--workers", "1")

    assert done.returncode == 0, done.stderr
    assert posts(mailgun) == ["a.example.com", "a.example.com", "b.example.com"]
    assert len(mailgun.calls("GET", "b.example.com/webhooks$")) == 2  # read again, not re-posted
    for name in ("a.example.com", "b.example.com"):
        assert all(mailgun.webhooks[name][k] == [URL] for k in EVENT_TYPES)
    assert "b.example.com: added" in done.stdout


@pytest.mark.parametrize(
    ("key", "args", "expected"),
    [
        ("wrong-key", [], "Mailgun refused the API key (401)"),
        ("", [], "no API key: set MAILGUN_API_KEY"),
        (API_KEY, ["--url", "hooks.example.com"], "is not an http(s) URL"),
        ("", ["--api-key-file", "/no/such/key"], "cannot read --api-key-file: [Errno 2]"),
    ],
    ids=["refused-key", "no-key", "bad-url", "unreadable-key-file"],
)
def test_bad_input_is_one_line_without_the_key(
    mailgun: FakeMailgun, key: str, args: list[str], expected: str
) -> None:
    mailgun.add_domain("a.example.com")
    done = register(mailgun, *args, key=key)
    assert done.returncode != 0
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert API_KEY not in done.stdout + done.stderr
    assert posts(mailgun) == []


def test_the_key_can_come_from_a_file_and_serving_still_needs_its_spool(
    mailgun: FakeMailgun, tmp_path: Path
) -> None:
    mailgun.add_domain("a.example.com")
    key_file = tmp_path / "mailgun-key"
    key_file.write_text(API_KEY + "\n")
    done = register(mailgun, "--api-key-file", str(key_file), key="")
    assert done.returncode == 0, done.stderr
    assert posts(mailgun) == ["a.example.com"]
    # Without a subcommand the script serves, as meltano.yml's `serve` runs it: --spool needed.
    serve = subprocess.run(
        [str(BIN / "tap-mailgun-webhooks"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2
    assert "--spool" in serve.stderr
