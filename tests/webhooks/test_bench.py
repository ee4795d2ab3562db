"""The load benchmark's own checks, on a small load (its speed is not judged here)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bench.webhooks_load import markdown, percentile, run


def test_a_small_load_loses_nothing_and_doubles_nothing_even_when_killed(tmp_path: Path) -> None:
    args = argparse.Namespace(
        requests=600,
        clients=4,
        max_seconds=60.0,
        redelivery_share=0.1,
        seed=1,
        out=tmp_path / "result",
    )
    result = asyncio.run(run(args))
    sustained, killed = result["sustained"], result["kill_and_restart"]
    assert sustained["statuses"] == {"200": 600}
    assert sustained["spooled"] == sustained["unique_events_sent"] < 600  # redeliveries deduped
    assert killed["killed_after_acknowledged"] > 0
    assert killed["lost"] == killed["doubled"] == 0
    assert result["goals"]["zero_lost_zero_doubled"]["met"]
    assert result["goals"]["every_200_spooled_after_kill"]["met"]
    assert "| accepted_per_s |" in markdown(result)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 100.0
    assert percentile(values, 0.50) == 51.0
    assert percentile([], 0.99) == 0.0
