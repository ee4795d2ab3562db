"""Meltano itself running the list-hygiene plugins on the sandbox: the `mailgun-validate`
mapper between tap-mailgun and target-brevo, and the `mailgun-health` utility."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tests.e2e.expected import brevo_events, expected_brevo_events, mailgun_events, undeliverable

if TYPE_CHECKING:
    from tests.e2e.conftest import Meltano, Sandboxes

RUN_VALIDATED = ("--environment=sandbox", "run", "tap-mailgun", "mailgun-validate", "target-brevo")


def test_the_mapper_validates_each_address_once_and_the_pipeline_still_delivers(
    meltano: Meltano, sandboxes: Sandboxes
) -> None:
    box = sandboxes.start()
    result = meltano(*RUN_VALIDATED, env=box.env())

    people = {e["recipient"] for e in mailgun_events(box)}
    people |= {m for members in box.mailgun.members.values() for m in members}
    people |= {a for items in box.mailgun.suppressions.values() for a in items}
    assert set(box.mailgun.validations) == {p.lower() for p in people}
    assert set(box.mailgun.validations.values()) == {1}  # billed once each
    # target-brevo never creates an address validated undeliverable, nor sends its events
    gone = undeliverable(box) & {p.lower() for p in people}
    assert gone
    assert brevo_events(box) == expected_brevo_events(box, withheld=gone)
    assert not gone & set(box.brevo.contacts)
    written = {c["attributes"].get("MG_VALIDATION") for c in box.brevo.contacts.values()}
    assert "deliverable" in written and "undeliverable" not in written
    withheld = re.search(r'contacts_withheld\\?": (\d+)', result.stderr + result.stdout)
    assert withheld is not None and int(withheld.group(1)) == len(gone)
    assert f"{len(people)} validated (billed)" in result.stderr + result.stdout

    # The next run finds every verdict in the cache: nothing billed.
    later = box.mailgun.validations.copy()
    again = meltano(*RUN_VALIDATED, env=box.env())
    assert box.mailgun.validations == later
    # Incremental: the suppressions and list members (full-table streams) come again.
    cached = re.search(r"(\d+) from cache, 0 validated \(billed\)", again.stderr + again.stdout)
    assert cached is not None
    assert int(cached.group(1)) > 0


def test_the_health_utility_reports_the_sandboxs_noisy_domain_and_exits_one(
    meltano: Meltano, sandboxes: Sandboxes
) -> None:
    box = sandboxes.start()

    result = meltano(
        "--environment=sandbox", "invoke", "mailgun-health", env=box.env(), check=False
    )

    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "mg.example.com: healthy" in lines
    assert "news.example.org: a threshold crossed" in lines
    report = Path(lines[-1].removeprefix("Report: "))
    assert report == box.directory / "mailgun-health.html"
    assert report.read_text().count("<svg") == 8
