"""Where a benchmark's figures go: `<stem>.json` (the results) and `<stem>.md` (the page a
reader reads), the results headed by when, at which commit and on which machine they were
measured."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.measure import machine


def git_commit() -> str:
    """The short commit of the checkout the benchmark runs from; "unknown" outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def provenance() -> dict[str, Any]:
    """When (UTC, to the second), at which commit and on which machine: now and here."""
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
    }


def write_results(stem: Path, result: dict[str, Any], page: str) -> None:
    """`result` as `stem`.json and `page` as `stem`.md, the folder created when missing."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(page)
