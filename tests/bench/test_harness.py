"""`make bench` must keep working: the harness, run as `python -m bench.run` on a tiny workload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One harness run on 2,000 events, through its real command line."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--events",
        "2000",
        "--recipients",
        "400",
        "--validate",
    ]
    argv += ["--repeat", "2", "--results", str(out / "results"), "--work", str(out / "work")]
    argv += ["--name", "tiny"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results" / "tiny.md").read_text().startswith("# Benchmark tiny")
    loaded: dict[str, Any] = json.loads((out / "results" / "tiny.json").read_text())
    return loaded


def test_counts_agree_end_to_end(result: dict[str, Any]) -> None:
    (run,) = result["runs"]
    loaded = sum(run["workload"]["events_loaded"].values())
    assert 1900 <= loaded <= 2100  # the generator is calibrated to the size asked for
    assert run["tap"]["records"]["events"] == loaded == run["workload"]["events"]
    assert all(run["checks"].values()), run["checks"]
    assert run["brevo_after_target_alone"] == run["brevo_after_pipeline"]


def test_figures_are_sane(result: dict[str, Any]) -> None:
    (run,) = result["runs"]
    for part in (run["tap"], run["target"], run["pipeline"]["tap"], run["pipeline"]["target"]):
        assert part["returncode"] == 0
        assert part["cpu_s"] > 0 and part["wall_s"] > 0
        assert 20 < part["max_rss_mb"] < 2000
    assert run["tap"]["events_per_s"] > 0 and run["target"]["events_per_s"] > 0
    assert len(run["tap"]["walls_s"]) == len(run["target"]["walls_s"]) == 2
    assert run["tap"]["wall_s"] == min(run["tap"]["walls_s"])
    assert result["machine"]["cores"] >= 1 and result["machine"]["singer_sdk"] != "not installed"


def test_calls_are_at_least_the_minimum(result: dict[str, Any]) -> None:
    (run,) = result["runs"]
    for side in ("brevo", "mailgun"):
        table = run["calls"][side]
        assert table["total"] == sum(e["calls"] for e in table["endpoints"]) > 0
        assert all(e["calls"] >= e["minimum"] for e in table["endpoints"]), table
    brevo = run["calls"]["brevo"]
    assert any(e["endpoint"] == "POST /v3/events/batch" for e in brevo["endpoints"])
    assert brevo["one_call_per_event_baseline"] >= run["tap"]["records"]["events"]


def test_the_target_is_also_measured_at_brevos_pace(result: dict[str, Any]) -> None:
    (run,) = result["runs"]
    paced = run["paced"]
    # the same work as the unthrottled run, against a fake answering 429 past 10 calls a second
    assert run["checks"]["paced_run_same_brevo_state"]
    assert paced["calls"] >= run["calls"]["brevo"]["minimum"]
    assert paced["refused_429"] == 0  # the pacer waits for the window, never past it
    assert paced["floor_s"] > 0 and paced["pace_ratio"] == round(
        paced["wall_s"] / paced["floor_s"], 2
    )
    assert result["goals"]["brevo_pace_ratio"]["value"] == paced["pace_ratio"]
