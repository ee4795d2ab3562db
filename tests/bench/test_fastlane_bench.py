"""The fast-lane latency benchmark's own checks, on a short run (its figures are not judged)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.fastlane_latency import markdown, run


def test_every_posted_suppression_is_blocklisted_and_timed(tmp_path: Path) -> None:
    # The pipe runner (no Meltano), a run every 10 s following the spool for 5.
    args = argparse.Namespace(
        minutes=0.3, interval=10.0, gap=3.0, runner="pipe", follow=5, seed=1, out=tmp_path / "x"
    )
    result = run(args)
    assert result["posted"] > 0
    assert result["samples"] == result["posted"]  # every one reached Brevo's blocklist
    assert result["never_blocklisted"] == 0
    assert result["runs"]["failed"] == 0
    assert result["spec_violations"] == 0
    assert (
        0 < result["latency_s"]["p50"] <= result["latency_s"]["p95"] <= result["latency_s"]["max"]
    )
    assert "| samples | p50 | p95 |" in markdown(result)
