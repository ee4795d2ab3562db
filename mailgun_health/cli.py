"""`mailgun-health`: read the account, write the report, print the verdicts, exit with them.

    mailgun-health --config tap-config.json --output report.html   # runs tap-mailgun itself
    mailgun-health --input account.singer --output report.html    # a Singer file of it
    meltano invoke mailgun-health                                  # settings from Meltano

The account is read through tap-mailgun's own streams (domains, domain_metrics, tag_metrics,
day resolution, the last `--days` days), as a subprocess of this Python. Exit codes, for
schedulers: 0 every domain within the published thresholds, 1 a threshold crossed (or a
required DNS record invalid), 2 the account could not be read or the report not written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import click

from mailgun_health.health import Account, DomainHealth, assess
from mailgun_health.render import STATUS_WORDS, page

STREAMS = ("domains", "domain_metrics", "tag_metrics")
EXIT_HEALTHY, EXIT_CROSSED, EXIT_UNREADABLE = 0, 1, 2


class UnreadableError(Exception):
    """The account could not be read: exit 2 with this message."""


def read_singer(lines: IO[str]) -> Account:
    """The three streams' records from Singer messages (other streams are ignored)."""
    account = Account()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise UnreadableError(f"line {number} is not a Singer message ({exc})") from None
        if message.get("type") == "RECORD" and message.get("stream") in STREAMS:
            getattr(account, message["stream"]).append(message["record"])
    return account


def _domains_setting(value: str | None) -> list[str]:
    """Domains from a flag or Meltano's env (a JSON array), or comma-separated."""
    if not value:
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    items = parsed if isinstance(parsed, list) else [str(parsed)]
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def tap_config(config: dict[str, Any], days: int, now: datetime) -> dict[str, Any]:
    """The tap's config for the report: its connection settings, day metrics over `days`."""
    wanted = ("api_key", "region", "base_url", "domains", "max_retries")
    chosen = {k: v for k, v in config.items() if k in wanted and v not in (None, "", [])}
    start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return {**chosen, "start_date": start.isoformat(), "metrics_resolution": "day"}


def run_tap(config: dict[str, Any]) -> Account:
    """tap-mailgun's domains, domain_metrics and tag_metrics, read by the tap itself."""
    tap = [sys.executable, "-m", "tap_mailgun.tap"]
    with tempfile.TemporaryDirectory(prefix="mailgun-health-") as folder:
        config_file = Path(folder) / "config.json"
        config_file.write_text(json.dumps(config))
        config_file.chmod(0o600)  # it holds the API key
        found = subprocess.run(  # noqa: S603 - this Python, the tap, our files
            [*tap, "--config", str(config_file), "--discover"], capture_output=True, text=True
        )
        if found.returncode != 0:
            raise UnreadableError(_last_line(found.stderr))
        catalog = json.loads(found.stdout)
        for stream in catalog["streams"]:
            for entry in stream["metadata"]:
                if not entry["breadcrumb"]:
                    entry["metadata"]["selected"] = stream["tap_stream_id"] in STREAMS
        catalog_file = Path(folder) / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        log = Path(folder) / "tap.log"
        with log.open("w") as errors, tempfile.TemporaryFile("w+") as output:
            ran = subprocess.run(  # noqa: S603 - this Python, the tap, our files
                [*tap, "--config", str(config_file), "--catalog", str(catalog_file)],
                stdout=output,
                stderr=errors,
                text=True,
            )
            if ran.returncode != 0:
                raise UnreadableError(_last_line(log.read_text()))
            output.seek(0)
            return read_singer(output)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "tap-mailgun failed without a message"


def summary(domains: list[DomainHealth], report: Path) -> str:
    """The verdicts in a few lines: one per domain, its findings, where the page is."""
    lines = []
    for health in domains:
        lines.append(f"{health.name}: {STATUS_WORDS[health.status]}")
        lines += [f"  {finding.level}: {finding.text}" for finding in health.findings]
    lines.append(f"Report: {report}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--input",
    "input_file",
    type=click.File("r"),
    help="A Singer file of tap-mailgun's domains, domain_metrics and tag_metrics ('-': stdin) "
    "instead of running the tap.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tap-mailgun's config file (api_key, region or base_url, domains).",
)
@click.option("--api-key", envvar="MAILGUN_HEALTH_API_KEY", help="Mailgun private API key.")
@click.option("--region", envvar="MAILGUN_HEALTH_REGION", help="us or eu.")
@click.option("--base-url", envvar="MAILGUN_HEALTH_BASE_URL", help="API root overriding region.")
@click.option(
    "--domains", envvar="MAILGUN_HEALTH_DOMAINS", help="Domains (comma-separated); default all."
)
@click.option(
    "--days",
    type=click.IntRange(1, 90),
    default=30,
    envvar="MAILGUN_HEALTH_DAYS",
    show_default=True,
    help="Days charted.",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    envvar="MAILGUN_HEALTH_UNTIL",
    help="The last day charted (UTC). Default: today.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mailgun-health.html"),
    envvar="MAILGUN_HEALTH_OUTPUT",
    show_default=True,
    help="Where the HTML report is written.",
)
def command(
    input_file: IO[str] | None,
    config_file: Path | None,
    api_key: str | None,
    region: str | None,
    base_url: str | None,
    domains: str | None,
    days: int,
    until: datetime | None,
    output: Path,
) -> None:
    """Report on the health of Mailgun sending domains: an offline HTML page, a summary on
    stdout, exit 0 healthy, 1 a threshold crossed, 2 could not read."""
    written = datetime.now(timezone.utc)
    now = until.replace(hour=23, minute=59, tzinfo=timezone.utc) if until else written
    try:
        flags = {"api_key": api_key, "region": region, "base_url": base_url}
        account = (
            read_singer(input_file)
            if input_file is not None
            else _read_account(config_file, flags, domains, days, now)
        )
        healths = assess(account, now.date(), days)
        if not healths:
            raise UnreadableError("no active domain and no metrics in what was read")
    except UnreadableError as exc:
        click.echo(f"mailgun-health: could not read the account: {exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page(healths, written, now.date(), days), encoding="utf-8")
    except OSError as exc:
        click.echo(f"mailgun-health: could not write {output}: {exc}; check --output", err=True)
        sys.exit(EXIT_UNREADABLE)
    click.echo(summary(healths, output.resolve()))
    crossed = any(h.status == "crossed" for h in healths)
    sys.exit(EXIT_CROSSED if crossed else EXIT_HEALTHY)


def _read_account(
    config_file: Path | None,
    flags: dict[str, str | None],
    domains: str | None,
    days: int,
    now: datetime,
) -> Account:
    """Run the tap with the config file, overridden by flags and MAILGUN_HEALTH_* settings."""
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise UnreadableError(f"--config {config_file}: {exc}") from None
    config.update({k: v for k, v in flags.items() if v})
    if _domains_setting(domains):
        config["domains"] = _domains_setting(domains)
    if not config.get("api_key"):
        raise UnreadableError(
            "no API key: pass --config (tap-mailgun's config), --api-key or "
            "MAILGUN_HEALTH_API_KEY, or --input with a Singer file"
        )
    return run_tap(tap_config(config, days, now))


def main() -> None:
    """The console script."""
    command()  # click exits with the command's code


if __name__ == "__main__":
    main()
