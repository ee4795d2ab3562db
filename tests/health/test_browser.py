"""The sandbox's report in a real headless Chromium (Debian's `chromium`, which `make test`
installs): it loads offline with no console message, and its charts render as SVG.

Never skipped: without Chromium the test fails and says how to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes.sandbox import MAILGUN_KEY, Sandbox

HEALTH = Path(sys.executable).with_name("mailgun-health")
REAL_NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
# Headless, isolated, and offline: every host name fails to resolve, so a page that needed a
# CDN or a web font would log a failed load.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=1",
)


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium on `page` with a fresh profile; stdout is what `args` ask (e.g. --dump-dom)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def console_messages(log: str) -> list[str]:
    """What the page wrote to its console (Chromium logs every level as CONSOLE)."""
    return re.findall(r":CONSOLE[:(]\d+\)?\] (.*)", log)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a small sandbox, written by the console script."""
    folder = tmp_path_factory.mktemp("health")
    box = Sandbox(
        folder / "sandbox",
        mailgun_port=0,
        brevo_port=0,
        real_now=REAL_NOW,
        messages_per_day=40,
        recipients=150,
    ).start()
    try:
        page = folder / "report.html"
        result = subprocess.run(
            [
                str(HEALTH),
                "--api-key",
                MAILGUN_KEY,
                "--base-url",
                box.mailgun.base_url,
                "--until",
                f"{box.clock.now:%Y-%m-%d}",
                "--output",
                str(page),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode in (0, 1), result.stderr
        assert box.violations() == []
    finally:
        box.stop()
    return page


def test_the_check_for_console_messages_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><body><script>console.error("boom")</script>'
        '<img src="https://cdn.example.com/chart.png"></body></html>'
    )
    run = chromium(broken, tmp_path / "profile", "--dump-dom")
    messages = console_messages(run.stderr)
    assert any('"boom"' in m for m in messages), run.stderr[-3000:]


def test_the_report_opens_offline_without_a_console_message_and_draws_its_charts(
    report: Path, tmp_path: Path
) -> None:
    dumped = chromium(report, tmp_path / "profile", "--dump-dom")

    assert dumped.returncode == 0, dumped.stderr[-3000:]
    assert console_messages(dumped.stderr) == []
    dom = dumped.stdout
    assert dom.count("<svg") == 8  # four rates for each of the sandbox's two domains
    assert dom.count('<polyline class="rate"') >= 8
    assert dom.count('class="threshold"') == 4
    assert "<h2>mg.example.com</h2>" in dom
    assert "<h2>news.example.org</h2>" in dom


def test_the_report_renders_to_a_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    taken = chromium(
        report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1800"
    )

    assert taken.returncode == 0, taken.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000  # charts, tables and text: far from a blank page
