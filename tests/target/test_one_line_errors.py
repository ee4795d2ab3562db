"""Where a user can be wrong, the real `target-brevo` ends in one line that says what to fix."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from fakes.events import tap_record
from tests.conftest import one_line_error
from tests.target.conftest import TARGET, TargetRunner, at, singer_lines

if TYPE_CHECKING:
    from pathlib import Path

    from fakes.brevo import FakeBrevo

EVENTS = singer_lines(
    {"events": [tap_record("delivered", at(0), event_id="e1", recipient="ada@example.com")]}
)


def test_a_store_url_whose_driver_is_missing_names_the_extra_to_install(
    brevo: FakeBrevo, target: TargetRunner, tmp_path: Path
) -> None:
    # psycopg hidden as in an install without the [postgres] extra, whatever this venv holds.
    hidden = tmp_path / "without-psycopg" / "psycopg"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(target.config(engagement_store="postgresql+psycopg://brevo:s3cret@db.example/x"))
    )
    data = tmp_path / "input.singer"
    data.write_text("\n".join(EVENTS) + "\n")

    done = subprocess.run(
        [TARGET, "--config", str(config), "--input", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(hidden.parent)},
        check=False,
    )

    assert one_line_error(done).endswith(
        "engagement_store: the postgresql driver (psycopg) is not installed; install the "
        "[postgres] extra: pip install 'mailgun-brevo-singer[postgres]' (in Meltano: add "
        "[postgres] to the pip_url, then meltano install)"
    )
    assert "s3cret" not in done.stderr
    assert brevo.calls() == []


def test_a_store_path_in_a_missing_folder_names_the_folder(
    brevo: FakeBrevo, target: TargetRunner, tmp_path: Path
) -> None:
    run = target.run(EVENTS, engagement_store=str(tmp_path / "typo" / "engagement.sqlite"))

    assert one_line_error(run).endswith(
        f"engagement_store: the folder {tmp_path / 'typo'} does not exist; create it "
        f"(mkdir -p {tmp_path / 'typo'}) or correct the path"
    )
    assert not (tmp_path / "typo").exists()
    assert brevo.calls() == []


def test_a_store_path_that_cannot_be_written_says_so(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    # /proc refuses new files even to root, whom file modes would not stop.
    run = target.run(EVENTS, engagement_store="/proc/engagement.sqlite")

    assert one_line_error(run).endswith(
        "engagement_store: cannot open sqlite:////proc/engagement.sqlite (unable to open "
        "database file); choose a file in a folder the target can write"
    )
    assert run.stdout == "", "no STATE: nothing was written"


def test_a_config_file_that_is_not_json_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"api_key": "xkeysib-x", "lists": {engaged: 1}}')

    done = subprocess.run(
        [TARGET, "--config", str(path)], capture_output=True, text=True, timeout=120, check=False
    )

    assert one_line_error(done) == (
        f"Error: --config {path} is not JSON: line 1 column 36: Expecting property name "
        "enclosed in double quotes; fix that line (JSON wants double quotes and no trailing "
        "commas)"
    )


def test_a_base_url_without_scheme_is_refused_before_any_request(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(EVENTS, base_url="api.brevo.com/v3")

    assert one_line_error(run).endswith(
        "base_url 'api.brevo.com/v3' is not an http(s) URL; write it with its scheme, e.g. "
        "https://api.brevo.com/v3"
    )


@pytest.mark.parametrize("path", ["", "/v3/v3"])
def test_a_base_url_whose_path_brevo_has_no_api_at_says_where_v3_goes(
    brevo: FakeBrevo, target: TargetRunner, path: str
) -> None:
    run = target.run(EVENTS, base_url=brevo.base_url + path)

    assert one_line_error(run).endswith(
        f"Brevo has no API at {path}/contacts/attributes (404): base_url ({brevo.base_url}{path}) "
        "must be Brevo's API root, with /v3 once, e.g. https://api.brevo.com/v3"
    )
    assert [c.status for c in brevo.calls()] == [404], "the run stops at the first call"


def test_a_brevo_host_that_does_not_resolve_fails_at_once(target: TargetRunner) -> None:
    # .invalid never resolves (RFC 6761); the client's six tries would take half a minute.
    run = target.run(EVENTS, base_url="https://api.brevo.invalid/v3")

    assert one_line_error(run).endswith(
        "the Brevo host api.brevo.invalid does not resolve (DNS): check base_url "
        "(https://api.brevo.invalid/v3) and the machine's DNS, then rerun: nothing was lost"
    )
    assert "retry" not in run.stderr
    assert run.stdout == "", "no STATE: what the tap sent stays to be sent"


def test_a_setting_of_the_wrong_type_is_named_in_one_line(
    brevo: FakeBrevo, target: TargetRunner
) -> None:
    run = target.run(EVENTS, batch_size_rows="many")

    assert one_line_error(run).endswith(
        "'many' is not of type 'integer', 'null' in config['batch_size_rows']: correct the "
        "setting (--about lists each setting, its type and its bounds)"
    )
    assert brevo.calls() == []
