"""`target-brevo --test`, what `meltano test` runs: Brevo accepts the key, or one clear line.

Through the real console script against the fake Brevo; the check reads GET /account and
touches neither the engagement store nor anything in Brevo.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

from tests.target.conftest import API_KEY, TARGET

if TYPE_CHECKING:
    from pathlib import Path

    from fakes.brevo import FakeBrevo


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`target-brevo --test` with these settings in the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_BREVO_")}
    return subprocess.run(
        [TARGET, *args, "--test"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_accepted_key_passes_and_writes_nothing(brevo: FakeBrevo, tmp_path: Path) -> None:
    store = tmp_path / "engagement.sqlite"
    env = {
        "TARGET_BREVO_API_KEY": API_KEY,
        "TARGET_BREVO_BASE_URL": f"{brevo.base_url}/v3",
        "TARGET_BREVO_ENGAGEMENT_STORE": str(store),
    }
    result = check(env, "--config=ENV")
    assert result.returncode == 0, result.stderr
    assert "Brevo accepts the API key" in result.stderr
    assert "Sandbox Shop" in result.stderr  # the account the fake answers for
    assert result.stdout == ""
    assert [(c.method, c.path) for c in brevo.calls()] == [("GET", "/v3/account")]
    assert not store.exists()


def test_a_refused_key_fails_in_one_line(brevo: FakeBrevo, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": "xkeysib-wrong", "base_url": f"{brevo.base_url}/v3"}))
    result = check({}, "--config", str(config))
    assert result.returncode == 1
    assert "Brevo refused the API key" in result.stderr
    assert "api_key" in result.stderr
    assert "Traceback" not in result.stderr
    assert "xkeysib-wrong" not in result.stderr
