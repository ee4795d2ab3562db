"""The real `tap-mailgun` console script, run as a subprocess against the fake Mailgun."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun
from tests.tap.conftest import API_KEY, DOMAIN, OTHER_DOMAIN, hours_ago, run_cli, tap_config

ISSUE_STREAMS = {
    "domains",
    "events",
    "bounces",
    "complaints",
    "unsubscribes",
    "tags",
    "domain_metrics",
    "tag_metrics",
    "mailing_lists",
    "list_members",
}
ISSUE_SETTINGS = {
    "api_key",
    "region",
    "base_url",
    "domains",
    "start_date",
    "event_lag_minutes",
    "event_types",
    "metrics_resolution",
    "metrics_lookback_days",
    "max_retries",
    "webhook_spool_path",
    "webhook_retention_days",
}


def write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def messages(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def records(stdout: str, stream: str) -> list[dict[str, Any]]:
    return [
        m["record"] for m in messages(stdout) if m["type"] == "RECORD" and m["stream"] == stream
    ]


def last_state(stdout: str) -> dict[str, Any]:
    states: list[dict[str, Any]] = [m["value"] for m in messages(stdout) if m["type"] == "STATE"]
    return states[-1]


def test_about_lists_every_stream_and_setting() -> None:
    done = run_cli("--about", "--format=json")

    assert done.returncode == 0, done.stderr
    about = json.loads(done.stdout)
    assert ISSUE_STREAMS | {"webhook_events"} == {s["name"] for s in about["streams"]}
    assert set(about["settings"]["properties"]) >= ISSUE_SETTINGS
    assert about["settings"]["properties"]["api_key"]["secret"] is True
    events = next(s for s in about["streams"] if s["name"] == "events")
    assert events["key_properties"] == ["id", "timestamp"]


def test_discover_describes_the_streams(tmp_path: Path, mailgun: FakeMailgun) -> None:
    config = write_json(
        tmp_path / "config.json",
        {**tap_config(mailgun), "webhook_spool_path": str(tmp_path / "spool.db")},
    )

    done = run_cli("--config", config, "--discover")

    assert done.returncode == 0, done.stderr
    catalog = {s["tap_stream_id"]: s for s in json.loads(done.stdout)["streams"]}
    assert set(catalog) == ISSUE_STREAMS | {"webhook_events"}
    assert catalog["events"]["key_properties"] == ["id", "timestamp"]
    assert catalog["events"]["replication_key"] == "timestamp"
    code = catalog["events"]["schema"]["properties"]["delivery_status"]["properties"]["code"]
    assert set(code["type"]) >= {"integer", "string"}
    assert mailgun.calls() == [], "discovery needs no API call"


def test_sync_then_resume_with_state(tmp_path: Path, mailgun: FakeMailgun) -> None:
    first = [
        mailgun_event("delivered", hours_ago(3) + i, recipient=f"a{i}@x.com") for i in range(4)
    ]
    mailgun.add_events(DOMAIN, first)
    mailgun.add_tag(DOMAIN, "welcome")
    config = write_json(
        tmp_path / "config.json", tap_config(mailgun, domains=[DOMAIN], event_lag_minutes=0)
    )

    run1 = run_cli("--config", config)
    assert run1.returncode == 0, run1.stderr
    assert [r["id"] for r in records(run1.stdout, "events")] == [e["id"] for e in first]
    assert [r["tag"] for r in records(run1.stdout, "tags")] == ["welcome"]

    # After run 1's window (Mailgun stores an event within event_lag_minutes of it).
    later = [mailgun_event("opened", time.time() + i / 10, recipient=f"b{i}@x.com") for i in (0, 1)]
    mailgun.add_events(DOMAIN, later)
    time.sleep(1.5)  # the Logs API's window ends on a whole second
    state = write_json(tmp_path / "state.json", last_state(run1.stdout))
    run2 = run_cli("--config", config, "--state", state)

    assert run2.returncode == 0, run2.stderr
    # Read through run 1's window: the domain begins at its end (not at its bookmark).
    assert [r["id"] for r in records(run2.stdout, "events")] == [e["id"] for e in later]


def test_a_failing_domain_is_reported_and_the_run_exits_non_zero(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    mailgun.add_events(OTHER_DOMAIN, [mailgun_event("delivered", hours_ago(2))])
    config = write_json(
        tmp_path / "config.json", tap_config(mailgun, domains=["mg.gone.com", OTHER_DOMAIN])
    )

    done = run_cli("--config", config)

    assert done.returncode != 0
    assert len(records(done.stdout, "events")) == 1, "the healthy domain still syncs"
    assert "no domain 'mg.gone.com'" in done.stderr
    assert "set region: eu" in done.stderr
    assert "part(s) of the sync failed" in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_api_key_never_appears_in_output_or_logs(tmp_path: Path, mailgun: FakeMailgun) -> None:
    secret = "key-0123456789abcdef-SECRET"
    encoded = base64.b64encode(f"api:{secret}".encode()).decode()
    mailgun.add_events(DOMAIN, [mailgun_event("failed", hours_ago(2), recipient="x@y.com")])
    mailgun.add_domain("mg.third.com")
    mailgun.fail_next(rf"GET /v3/{DOMAIN}/events$", 429, {"message": "slow"}, {"Retry-After": "0"})
    mailgun.fail_next(rf"GET /v3/{DOMAIN}/bounces$", 500, {"message": "oops"}, times=5)
    mailgun.api_key = secret

    runs = {
        "sync with retries and a failing partition": tap_config(
            mailgun, api_key=secret, max_retries=1
        ),
        "refused key": tap_config(mailgun, api_key=secret + "-revoked"),
        "unreachable host": tap_config(
            mailgun, api_key=secret, base_url=f"http://127.0.0.1:{_free_port()}", max_retries=1
        ),
    }
    outputs = {}
    for name, config in runs.items():
        path = write_json(tmp_path / "config.json", config)
        done = run_cli("--config", path)
        outputs[name] = done
        for text in (done.stdout, done.stderr):
            assert secret not in text, name
            assert encoded not in text, name

    assert records(outputs["sync with retries and a failing partition"].stdout, "events")
    assert outputs["sync with retries and a failing partition"].returncode != 0
    assert "refused the API key" in outputs["refused key"].stderr
    assert outputs["unreachable host"].returncode != 0
    assert "Could not connect to Mailgun at http://127.0.0.1:" in outputs["unreachable host"].stderr
    assert "Traceback" not in outputs["unreachable host"].stderr


def test_a_bad_setting_is_refused_before_any_request(tmp_path: Path, mailgun: FakeMailgun) -> None:
    config = write_json(
        tmp_path / "config.json", tap_config(mailgun, region="ap", event_lag_minutes=-5)
    )

    done = run_cli("--config", config)

    assert done.returncode != 0
    assert "'ap' is not one of ['us', 'eu']" in done.stderr
    assert "-5 is less than the minimum of 0" in done.stderr
    assert mailgun.calls() == []


@pytest.mark.parametrize("cut", [{}, {"chunked": True}, {"after_headers": False}])
def test_answers_cut_on_the_socket_are_retried_then_reported_without_a_traceback(
    tmp_path: Path, mailgun: FakeMailgun, cut: dict[str, bool]
) -> None:
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", hours_ago(2))])
    mailgun.add_tag(DOMAIN, "welcome")
    mailgun.cut_next(rf"GET /v3/{DOMAIN}/tags", **cut)  # once: the retry reads it
    mailgun.cut_next("GET /v4/domains", times=100, **cut)  # always: that stream fails
    mailgun.cut_next("GET /v3/lists", times=100, **cut)
    config = write_json(tmp_path / "config.json", tap_config(mailgun, domains=[DOMAIN]))

    done = run_cli("--config", config)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(records(done.stdout, "events")) == 1
    assert [r["tag"] for r in records(done.stdout, "tags")] == ["welcome"]
    assert len(mailgun.calls("GET", "^/v4/domains")) == 3  # the try and max_retries (2)
    (failed,) = [line for line in done.stderr.splitlines() if line.startswith("- domains: ")]
    assert "Error after the retries: " in failed


def test_an_untrusted_certificate_stops_the_run_at_once_without_a_traceback(
    tmp_path: Path,
) -> None:
    tls = Path(__file__).parent.parent / "tls"  # a self-signed certificate for 127.0.0.1
    secure = FakeMailgun(api_key=API_KEY)
    secure.add_domain(DOMAIN)
    secure.use_tls(str(tls / "cert.pem"), str(tls / "key.pem"))
    with secure:
        config = write_json(tmp_path / "config.json", tap_config(secure, domains=[DOMAIN]))
        done = run_cli("--config", config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "certificate verify failed" in done.stderr
    assert "No retry can change that: check base_url" in done.stderr
    assert "Backing off" not in done.stderr  # not retried
