"""Running the real console scripts as child processes and measuring them.

CPU time comes from `os.wait4`, the kernel's own account of exactly that child. Peak memory
does NOT come from wait4's ru_maxrss: Linux carries the parent's high-water mark into a
child across fork and exec, so every child of a harness holding a million fake events would
"peak" at the harness's size. It is read instead from the child's own VmHWM in
/proc/<pid>/status (the high-water mark of its post-exec address space), sampled every 20 ms
from a thread of the harness until the child exits; only the growth in its last 20 ms can be
missed. Where /proc is missing, ru_maxrss is used and flagged.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
import threading
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


class _PeakRss(threading.Thread):
    """Samples a child's VmHWM (its own peak resident memory) until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kb = 0
        self._stop_event = threading.Event()
        self.start()

    def _sample(self) -> None:
        try:
            text = self.status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                return

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self._sample()

    def stop(self) -> int:
        """Stop sampling; the peak seen, in kilobytes (0 if /proc could not be read)."""
        self._stop_event.set()
        self.join()
        return self.peak_kb


def _spawn(argv: Sequence[str], **popen: Any) -> tuple[subprocess.Popen[bytes], _PeakRss]:
    """Start a child; Popen returns only after its exec, so every sample is of the child."""
    proc = subprocess.Popen(list(argv), **popen)
    return proc, _PeakRss(proc.pid)


def _reap(
    proc: subprocess.Popen[bytes], peak: _PeakRss, started: float, argv: list[str]
) -> ProcessRun:
    """Wait for `proc` with wait4 so its own rusage (not the whole family's) is read."""
    # One last sample while it may still be running; a zombie has no VmHWM and is skipped.
    peak._sample()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb = peak.stop() or usage.ru_maxrss  # ru_maxrss (kB on Linux) only without /proc
    return ProcessRun(
        argv=argv,
        wall_s=round(wall, 3),
        user_s=round(usage.ru_utime, 3),
        sys_s=round(usage.ru_stime, 3),
        max_rss_mb=round(peak_kb / 1024, 1),
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
        proc, peak = _spawn(argv, stdin=fin, stdout=fout, stderr=ferr, env=env)
        return _check(_reap(proc, peak, started, list(argv)), stderr)


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
        producer, producer_peak = _spawn(
            left, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=ferr_left, env=env
        )
        assert producer.stdout is not None
        consumer, consumer_peak = _spawn(
            right, stdin=producer.stdout, stdout=fout, stderr=ferr_right, env=env
        )
        # Only the consumer may hold the read end now, or the producer would never see EPIPE.
        producer.stdout.close()
        left_run = _reap(producer, producer_peak, started, list(left))
        right_run = _reap(consumer, consumer_peak, started, list(right))
        wall = round(time.perf_counter() - started, 3)
    # The consumer first: when it dies, the producer's broken pipe is only the consequence.
    _check(right_run, stderr_right)
    _check(left_run, stderr_left)
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
