"""Folding py-spy's raw stacks into self and inclusive shares per function."""

from __future__ import annotations

from pathlib import Path

from bench.profile import fold, summary

RAW = [
    "<module> (tap:1);sync (/x/site-packages/singer_sdk/streams/core.py:10);"
    "pop (/x/site-packages/singer_sdk/helpers/_catalog.py:91) 30\n",
    "<module> (tap:1);sync (/x/site-packages/singer_sdk/streams/core.py:10);"
    "write (/work/main/tap_mailgun/tap.py:39) 60\n",
    "<module> (tap:1);sync (/x/site-packages/singer_sdk/streams/core.py:12) 10\n",
    "garbage line without a count\n",
]


def test_fold_counts_self_and_inclusive_samples_per_function() -> None:
    own, inclusive, total = fold(RAW)
    assert total == 100
    assert own["tap_mailgun/tap.py:write"] == 60
    assert own["singer_sdk/helpers/_catalog.py:pop"] == 30
    assert own["singer_sdk/streams/core.py:sync"] == 10  # two lines of one function
    assert inclusive["singer_sdk/streams/core.py:sync"] == 100


def test_summary_ranks_functions_by_share(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("".join(RAW))
    text = summary(raw, "tap", top=2)
    own_part = text.split("## top 2 by self time")[1].split("##")[0]
    assert [line.strip() for line in own_part.strip().splitlines()] == [
        "60.0%  tap_mailgun/tap.py:write",
        "30.0%  singer_sdk/helpers/_catalog.py:pop",
    ]
