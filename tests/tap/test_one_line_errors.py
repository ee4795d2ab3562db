"""Where a user can be wrong, the real `tap-mailgun` ends in one line that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fakes.tap_catalog import write_catalog
from tests.conftest import one_line_error
from tests.tap.conftest import TAP, run_cli, tap_config

if TYPE_CHECKING:
    from fakes.mailgun import FakeMailgun


def config_file(tmp_path: Path, config: dict[str, object]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ("127.0.0.1:8080", "base_url '127.0.0.1:8080' is not an http(s) URL; write it with its "
         "scheme, e.g. https://api.mailgun.net"),
        ("https://api.mailgun.net /", "base_url 'https://api.mailgun.net /' contains a space or "
         "line break; remove it"),
    ],
)  # fmt: skip
def test_a_base_url_that_is_no_url_is_refused_before_any_request(
    tmp_path: Path, mailgun: FakeMailgun, base_url: str, says: str
) -> None:
    config = config_file(tmp_path, tap_config(mailgun, base_url=base_url))

    line = one_line_error(run_cli("--config", config))

    assert line.startswith(f"Error: {says}")
    assert mailgun.calls() == []


def test_a_base_url_with_v3_stops_at_mailguns_404_and_says_to_remove_it(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    config = config_file(tmp_path, tap_config(mailgun, base_url=f"{mailgun.base_url}/v3"))

    line = one_line_error(run_cli("--config", config))

    assert line.startswith("Error: Mailgun has no API at /v3/v")
    assert line.endswith(
        "remove /v3 from base_url: it is the API root, e.g. https://api.mailgun.net."
    )
    assert {c.status for c in mailgun.calls()} == {404}
    # The run stops at the first 404 (every path would fail): what was sent is only the
    # first request of each domain, read at the same time (concurrent_domains).
    assert len(mailgun.calls()) <= 2 and all(c.path.endswith("/bounces") for c in mailgun.calls())


def test_a_base_url_with_another_path_is_told_to_be_the_api_root(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    config = config_file(tmp_path, tap_config(mailgun, base_url=f"{mailgun.base_url}/mailgun"))

    line = one_line_error(run_cli("--config", config))

    assert line.startswith("Error: Mailgun has no API at /mailgun/v")
    assert line.endswith(
        "base_url must be the API root (e.g. https://api.mailgun.net), without /v3."
    )


def test_the_connection_test_with_a_refused_key_ends_in_one_line(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    config = config_file(tmp_path, tap_config(mailgun, api_key="key-revoked"))

    line = one_line_error(run_cli("--config", config, "--test"))

    assert line.startswith("Error: Mailgun refused the API key (401) at http://127.0.0.1:")
    assert "Check api_key (MAILGUN_API_KEY)" in line
    assert "key-revoked" not in line


def test_the_connection_test_passes_with_a_good_key(tmp_path: Path, mailgun: FakeMailgun) -> None:
    done = run_cli("--config", config_file(tmp_path, tap_config(mailgun)), "--test")

    assert done.returncode == 0, done.stderr


def test_a_config_file_that_is_not_json_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "api_key": "key-x",\n  "domains": ["mg.example.com",],\n}\n')

    line = one_line_error(run_cli("--config", str(path)))

    assert line.startswith(f"Error: --config {path} is not JSON: line 3 column ")
    assert line.endswith("fix that line (JSON wants double quotes and no trailing commas)")


def test_a_host_that_does_not_resolve_fails_at_once(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761); six tries with backoff would take half a minute.
    config = config_file(
        tmp_path,
        {"api_key": "key-x", "base_url": "https://api.mailgun.invalid", "max_retries": 5},
    )

    done = run_cli("--config", config)

    assert one_line_error(done) == (
        "Error: The Mailgun host api.mailgun.invalid does not resolve (DNS), so nothing can be "
        "read from https://api.mailgun.invalid (base_url, which overrides region us): check "
        "base_url or region, and the machine's DNS."
    )
    assert "Backing off" not in done.stderr


def test_a_webhook_spool_that_is_no_spool_ends_in_one_line(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    spool = tmp_path / "spool.sqlite"
    spool.write_text("not a database\n" * 100)
    config = config_file(tmp_path, tap_config(mailgun, webhook_spool_path=str(spool)))
    catalog = write_catalog(TAP, Path(config), tmp_path / "catalog.json", "webhook_events")

    line = one_line_error(run_cli("--config", config, "--catalog", str(catalog)))

    assert line == (
        f"Error: cannot open the webhook spool {spool}: file is not a database (webhook_spool_path)"
    )


def test_a_setting_out_of_its_bounds_is_named_in_one_line(
    tmp_path: Path, mailgun: FakeMailgun
) -> None:
    config = config_file(tmp_path, tap_config(mailgun, concurrent_domains=0))

    line = one_line_error(run_cli("--config", config))

    assert line == (
        "Error: 0 is less than the minimum of 1 in config['concurrent_domains']: correct the "
        "setting (--about lists each setting, its type and its bounds)"
    )
    assert mailgun.calls() == []
