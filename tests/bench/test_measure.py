"""Peak memory must be the child's own, not the harness's (Linux copies it across fork/exec)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.measure import run_one

ALLOCATE_60_MB = "x = bytearray(60 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1"


def test_peak_rss_is_the_childs_own(tmp_path: Path) -> None:
    ballast = bytearray(300 * 2**20)  # the harness holding a big fake workload
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    run = run_one(
        [sys.executable, "-c", ALLOCATE_60_MB],
        stdin=None,
        stdout=tmp_path / "out",
        stderr=tmp_path / "err",
        env=dict(os.environ),
    )
    assert run.returncode == 0
    assert 60 < run.max_rss_mb < 200, run
    assert run.cpu_s > 0 and run.wall_s > 0
