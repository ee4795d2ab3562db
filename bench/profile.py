"""What dominates: py-spy's raw samples folded into the functions that cost the most.

py-spy samples the real console script from outside (no instrumentation inside the measured
process). Its raw output is one line per distinct stack, `frame;frame;... count`; this module
turns that into two short tables: where the CPU is spent (self) and which calls it is spent
under (inclusive).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """`f (…/site-packages/singer_sdk/core.py:12)` as `singer_sdk/core.py:f`."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['func']}"


def fold(lines: Iterable[str]) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per function, and the total number of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def summary(raw: Path, title: str, top: int = 25) -> str:
    """A text report of the `top` functions by self and by inclusive samples."""
    with raw.open() as fh:
        own, inclusive, total = fold(fh)
    lines = [
        f"# {title}",
        f"{total} samples (py-spy, 100 Hz; idle threads, e.g. waiting on a socket, not sampled)",
        "",
    ]
    for heading, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"## top {top} by {heading} time")
        for name, samples in counter.most_common(top):
            lines.append(f"{100 * samples / max(total, 1):6.1f}%  {name}")
        lines.append("")
    return "\n".join(lines)
