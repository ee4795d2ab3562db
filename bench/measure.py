"""Running the real console scripts as child processes and measuring them.

Peak memory and CPU time come from `os.wait4`, which hands back the kernel's own resource
usage of exactly that child: no polling, so nothing is missed between samples and nothing
is added to the measured process.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class ProcessRun:
    """What one child process cost: wall and CPU seconds, peak resident memory, exit code."""

    argv: list[str]
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    returncode: int

    @property
    def cpu_s(self) -> float:
        """CPU seconds, user plus system."""
        return self.user_s + self.sys_s

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with CPU seconds."""
        return {**asdict(self), "cpu_s": round(self.cpu_s, 3)}


class ChildFailed(RuntimeError):
    """A measured child exited non-zero; the message names its stderr log."""


def _reap(proc: subprocess.Popen[bytes], started: float, argv: list[str]) -> ProcessRun:
    """Wait for `proc` with wait4 so its own rusage (not the whole family's) is read."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux.
    return ProcessRun(
        argv=argv,
        wall_s=round(wall, 3),
        user_s=round(usage.ru_utime, 3),
        sys_s=round(usage.ru_stime, 3),
        max_rss_mb=round(usage.ru_maxrss / 1024, 1),
        returncode=proc.returncode,
    )


def _check(run: ProcessRun, stderr_path: Path) -> ProcessRun:
    if run.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise ChildFailed(
            f"{Path(run.argv[0]).name} exited with {run.returncode}; "
            f"its log is {stderr_path}, ending with:\n{tail}"
        )
    return run


def run_one(
    argv: Sequence[str], *, stdin: Path | None, stdout: Path, stderr: Path, env: dict[str, str]
) -> ProcessRun:
    """Run one command with files for stdin/stdout/stderr and measure it."""
    with (
        (stdin or Path(os.devnull)).open("rb") as fin,
        stdout.open("wb") as fout,
        stderr.open("wb") as ferr,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=fin, stdout=fout, stderr=ferr, env=env)
        return _check(_reap(proc, started, list(argv)), stderr)


def run_pipe(
    left: Sequence[str],
    right: Sequence[str],
    *,
    stdout: Path,
    stderr_left: Path,
    stderr_right: Path,
    env: dict[str, str],
) -> tuple[ProcessRun, ProcessRun, float]:
    """Run `left | right` as two processes and measure each, plus the wall time of the pair."""
    with (
        stdout.open("wb") as fout,
        stderr_left.open("wb") as ferr_left,
        stderr_right.open("wb") as ferr_right,
    ):
        started = time.perf_counter()
        producer = subprocess.Popen(
            list(left), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=ferr_left, env=env
        )
        assert producer.stdout is not None
        consumer = subprocess.Popen(
            list(right), stdin=producer.stdout, stdout=fout, stderr=ferr_right, env=env
        )
        # Only the consumer may hold the read end now, or the producer would never see EPIPE.
        producer.stdout.close()
        left_run = _reap(producer, started, list(left))
        right_run = _reap(consumer, started, list(right))
        wall = round(time.perf_counter() - started, 3)
    _check(left_run, stderr_left)
    _check(right_run, stderr_right)
    return left_run, right_run, wall


@contextlib.contextmanager
def host_cost() -> Iterator[dict[str, float]]:
    """CPU seconds this process spends inside the block, and the machine's load after it.

    The harness process serves the fakes, so its CPU during a phase is what the fake APIs
    cost; the 1-minute load average tells whether other work shared the cores.
    """
    cost: dict[str, float] = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    yield cost
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cost["fakes_cpu_s"] = round(used, 3)
    cost["load_avg_1m"] = round(os.getloadavg()[0], 2)


def console_script(name: str) -> str:
    """The path of a console script installed next to this interpreter (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; install the project into this interpreter's environment "
            "(`make bench` does it: pip install -e '.[dev]')"
        )
    return str(path)


def _meminfo_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cores": usable,
        "memory_gb": _meminfo_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "singer_sdk": _version("singer-sdk"),
        "msgspec": _version("msgspec"),
    }
