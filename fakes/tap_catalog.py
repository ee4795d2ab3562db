"""The real `tap-mailgun`'s catalog with only some streams selected, as the tests and the
benchmarks run the console script (Meltano selects streams itself)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def select_only(catalog: dict[str, Any], *streams: str) -> dict[str, Any]:
    """`catalog` (a tap's, as JSON) with only `streams` selected: changed in place, returned."""
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return catalog


def write_catalog(
    tap: str | Path,
    config: Path,
    path: Path,
    *streams: str,
    env: Mapping[str, str] | None = None,
) -> Path:
    """`tap --config config --discover`'s catalog with only `streams` selected, written to
    `path` (its folder created when missing); `path`. CalledProcessError when discovery fails."""
    found = subprocess.run(
        [str(tap), "--config", str(config), "--discover"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(select_only(json.loads(found.stdout), *streams)))
    return path
