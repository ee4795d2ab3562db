"""`make bench-domains` must keep working: the harness on an account of 3 domains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.domains import floor_seconds

ROOT = Path(__file__).resolve().parents[2]


def test_the_harness_runs_and_its_checks_pass(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench.domains", "--domains", "3", "--latency", "0.02"]
    argv += ["--concurrency", "2", "--validate", "--name", "tiny"]
    argv += ["--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((tmp_path / "results" / "tiny.json").read_text())
    (account,) = result["accounts"]
    assert all(account["checks"].values()), account["checks"]
    for run in (account["first"], account["incremental"]):
        assert run["records"]["events"] >= 3 * 20
        assert run["requests"] == sum(run["requests_by_endpoint"].values())
        assert 0 < run["floor_s"] <= run["wall_s"]
    assert (tmp_path / "results" / "tiny.md").read_text().startswith("# Benchmark tiny")


def test_the_floor_divides_only_per_domain_requests_by_the_concurrency() -> None:
    requests = {"GET /v3/{domain}/bounces": 100, "POST /v1/analytics/tags": 2}
    assert floor_seconds(requests, 10, 0.25) == (2 + 100 / 10) * 0.25
    assert floor_seconds(requests, 1, 0.25) == 102 * 0.25
    with_logs = {**requests, "POST /v1/analytics/logs": 64}
    assert floor_seconds(with_logs, 10, 0.25, slices=32) == (2 + 100 / 10 + 64 / 32) * 0.25
