"""`make bench-fastlane`: how long a webhook suppression takes to be blocklisted in Brevo.

The sandbox's setup on loopback: the fake Mailgun and fake Brevo, the real receiver
(`tap-mailgun-webhooks` as a subprocess) on a fresh spool, and the fast lane run at its real
interval, as its schedule runs it: `meltano run mailgun-fastlane` started every `--interval`
seconds (60, the schedule's `* * * * *`) unless the previous run still runs, as the README's
cron line (`flock -n`) does.
Meanwhile signed webhook calls (hard bounces, complaints, unsubscribes, Mailgun declining a
suppressed address; one new recipient each) are POSTed at random moments (exponential gaps of
mean `--gap` seconds), and the fake Brevo's contacts are polled every 0.2 s. One sample is the
time from the start of a POST to the fake Brevo holding its recipient's blocklist flag.
Results: bench/results/fastlane_latency.{json,md} (p50, p95, max, with the machine).

`--runner pipe` runs `tap-mailgun | target-brevo` by hand instead of Meltano (the same plugins,
state passed from one run to the next): the same fast lane without Meltano's own start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.measure import console_script, machine
from bench.results import write_results
from bench.webhooks_load import percentile
from fakes.brevo import FakeBrevo
from fakes.events import DOMAIN, mailgun_event
from fakes.mailgun import FakeMailgun
from fakes.receiver_process import ReceiverProcess
from fakes.tap_catalog import write_catalog
from fakes.webhook_payloads import signed_body

ROOT = Path(__file__).resolve().parents[1]
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
GOAL_P95_S = 60.0
MAILGUN_KEY, BREVO_KEY = "key-bench", "xkeysib-bench"
# What each sample is, in turn: every kind the fast lane must blocklist.
SUPPRESSIONS: list[tuple[str, dict[str, Any]]] = [
    ("failed", {}),  # a hard bounce
    ("complained", {}),
    ("unsubscribed", {}),
    ("failed", {"reason": "suppress-complaint"}),
]


def fast_lane_config(plugin: str) -> dict[str, Any]:
    """What meltano.yml sets for one of the fast lane's plugins (the pipe runs the same)."""
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    found = [p for kind in project["plugins"].values() for p in kind if p["name"] == plugin]
    return dict(found[0].get("config") or {})


@dataclass
class Tally:
    """What the run saw: POST times, blocklist times, fast-lane runs."""

    posted: dict[str, float] = field(default_factory=dict)  # recipient -> monotonic POST start
    blocked: dict[str, float] = field(default_factory=dict)  # recipient -> first seen blocklisted
    runs: list[dict[str, Any]] = field(default_factory=list)
    ticks_skipped: int = 0  # the previous run still ran (cron's `flock -n` skips)
    load: list[float] = field(default_factory=list)  # 1-minute load average, sampled
    lock: threading.Lock = field(default_factory=threading.Lock)


class FastLane:
    """One fast-lane run, by Meltano (the schedule's job) or by a pipe of the console scripts."""

    def __init__(self, args: argparse.Namespace, work: Path, mailgun: FakeMailgun,
                 brevo: FakeBrevo, spool: Path) -> None:  # fmt: skip
        runner = args.runner
        self.runner, self.work = runner, work
        follow = fast_lane_config("tap-mailgun--fastlane")
        if args.follow is not None:
            follow["webhook_follow_seconds"] = args.follow
        store = work / "engagement.sqlite"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TAP_", "TARGET_"))},
            "MAILGUN_API_KEY": MAILGUN_KEY,
            "MAILGUN_DOMAIN": DOMAIN,
            "BREVO_API_KEY": BREVO_KEY,
            "TAP_MAILGUN_BASE_URL": mailgun.base_url,
            "TAP_MAILGUN_WEBHOOK_SPOOL_PATH": str(spool),
            "TARGET_BREVO_BASE_URL": brevo.base_url + "/v3",
            "TARGET_BREVO_ENGAGEMENT_STORE": str(store),
            "MELTANO_DATABASE_URI": f"sqlite:///{work / 'meltano.db'}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        self.tap_config = work / "tap.json"
        self.tap_config.write_text(
            json.dumps({"api_key": MAILGUN_KEY, "base_url": mailgun.base_url,
                        "domains": [DOMAIN], "webhook_spool_path": str(spool), **follow})
        )  # fmt: skip
        self.target_config = work / "target.json"
        self.target_config.write_text(
            json.dumps({"api_key": BREVO_KEY, "base_url": brevo.base_url + "/v3",
                        "engagement_store": str(store),
                        **fast_lane_config("target-brevo--fastlane")})
        )  # fmt: skip
        self.state: str | None = None
        self.catalog = work / "catalog.json" if runner == "pipe" else None
        if self.catalog is not None:
            tap = console_script("tap-mailgun")
            write_catalog(tap, self.tap_config, self.catalog, "webhook_events")

    def run(self) -> tuple[int, str]:
        """One run; (exit code, its log)."""
        if self.runner == "meltano":
            done = subprocess.run(
                [str(MELTANO), "--environment=dev", "run", "mailgun-fastlane"],
                cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            return done.returncode, done.stdout + done.stderr
        return self._pipe()  # one at a time (`schedule`): the state passes from run to run

    def _pipe(self) -> tuple[int, str]:
        args = [console_script("tap-mailgun"), "--config", str(self.tap_config),
                "--catalog", str(self.catalog)]  # fmt: skip
        if self.state is not None:
            state_file = self.work / "state.json"
            state_file.write_text(self.state)
            args += ["--state", str(state_file)]
        tap = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        target = subprocess.Popen(
            [console_script("target-brevo"), "--config", str(self.target_config)],
            stdin=tap.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert tap.stdout is not None
        tap.stdout.close()
        out, err = target.communicate(timeout=600)
        code = tap.wait(timeout=60) or target.returncode
        states = [line for line in out.splitlines() if line.strip()]
        if code == 0 and states:
            self.state = states[-1]
        return code, err


def schedule(lane: FastLane, interval: float, until: float, tally: Tally) -> list[threading.Thread]:
    """Start a run every `interval` seconds until `until` (monotonic), each in its own thread,
    unless the last one still runs: the README's cron line (`flock -n`) skips that tick."""
    started: list[threading.Thread] = []
    running = threading.Lock()

    def one(at: float) -> None:
        try:
            code, log = lane.run()
        finally:
            running.release()
        took = time.monotonic() - at
        with tally.lock:
            tally.runs.append(
                {"started_s": round(at, 3), "seconds": round(took, 2), "exit": code,
                 "skipped": "fast lane skipped" in log, "log_tail": log[-1500:] if code else ""}
            )  # fmt: skip

    tick = time.monotonic()
    while tick < until:
        time.sleep(max(0.0, tick - time.monotonic()))
        tick += interval
        if not running.acquire(blocking=False):
            with tally.lock:
                tally.ticks_skipped += 1
            continue
        thread = threading.Thread(target=one, args=(time.monotonic(),), daemon=True)
        thread.start()
        started.append(thread)
    return started


def send(receiver: ReceiverProcess, gap: float, until: float, seed: int, tally: Tally) -> None:
    """POST one suppression at random moments until `until`; record when each POST began."""
    rng = random.Random(seed)
    session = requests.Session()
    i = 0
    while (now := time.monotonic()) < until:
        kind, extra = SUPPRESSIONS[i % len(SUPPRESSIONS)]
        recipient = f"fast{i}@example.org"
        body = signed_body(mailgun_event(kind, recipient=recipient, event_id=f"fast-{i}", **extra))
        began = time.monotonic()
        answer = session.post(
            receiver.url, data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        if answer.status_code == 200:
            with tally.lock:
                tally.posted[recipient] = began
        i += 1
        time.sleep(max(0.0, rng.expovariate(1 / gap) - (time.monotonic() - now)))


def watch(brevo: FakeBrevo, stop: threading.Event, tally: Tally) -> None:
    """Poll the fake Brevo's contacts every 0.2 s; note when each recipient is blocklisted."""
    ticks = 0
    while not stop.wait(0.2):
        ticks += 1
        if ticks % 50 == 0:  # every 10 s: how busy the machine is, for the record
            tally.load.append(os.getloadavg()[0])
        now = time.monotonic()
        contacts = brevo.state()["contacts"]
        with tally.lock:
            for recipient in tally.posted.keys() - tally.blocked.keys():
                if contacts.get(recipient, {}).get("emailBlacklisted"):
                    tally.blocked[recipient] = now


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement; the result as plain data."""
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="bench-fastlane-") as tmp:
        work = Path(tmp)
        spool = work / "spool.sqlite"
        mailgun, brevo = FakeMailgun(api_key=MAILGUN_KEY), FakeBrevo(api_key=BREVO_KEY)
        mailgun.add_domain(DOMAIN)
        receiver = ReceiverProcess(spool, log_dir=work)
        stop = threading.Event()
        with mailgun, brevo:
            try:
                lane = FastLane(args, work, mailgun, brevo, spool)
                watcher = threading.Thread(target=watch, args=(brevo, stop, tally), daemon=True)
                watcher.start()
                start = time.monotonic()
                sending_until = start + args.minutes * 60
                sender = threading.Thread(
                    target=send, args=(receiver, args.gap, sending_until, args.seed, tally)
                )
                runs: list[threading.Thread] = []
                # Runs go on three intervals past the last POST, so every sample can land.
                scheduler = threading.Thread(
                    target=lambda: runs.extend(
                        schedule(lane, args.interval, sending_until + 3 * args.interval, tally)
                    )
                )
                scheduler.start()
                sender.start()
                sender.join()
                scheduler.join()
                for thread in runs:
                    thread.join(timeout=600)
                stop.set()
                watcher.join()
            finally:
                receiver.stop()
        violations = mailgun.violations + brevo.violations
    return result(args, tally, violations)


def result(args: argparse.Namespace, tally: Tally, violations: list[Any]) -> dict[str, Any]:
    """Latency percentiles, runs and the machine."""
    seconds = [tally.blocked[r] - tally.posted[r] for r in tally.blocked]
    durations = [r["seconds"] for r in tally.runs if r["exit"] == 0 and not r["skipped"]]
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {
            "runner": "meltano run mailgun-fastlane"
            if args.runner == "meltano"
            else "tap-mailgun | target-brevo",
            "interval_s": args.interval,
            "follow_s": args.follow
            if args.follow is not None
            else fast_lane_config("tap-mailgun--fastlane").get("webhook_follow_seconds", 0),
            "minutes_of_posts": args.minutes,
            "mean_gap_s": args.gap,
        },
        "samples": len(seconds),
        "posted": len(tally.posted),
        "never_blocklisted": len(tally.posted) - len(seconds),
        "latency_s": {
            "p50": round(percentile(seconds, 0.50), 1),
            "p95": round(percentile(seconds, 0.95), 1),
            "max": round(max(seconds, default=0.0), 1),
            "min": round(min(seconds, default=0.0), 1),
        },
        "runs": {
            "count": len(tally.runs),
            "failed": sum(r["exit"] != 0 for r in tally.runs),
            "skipped": sum(r["skipped"] for r in tally.runs),
            "ticks_skipped_previous_still_running": tally.ticks_skipped,
            "seconds_p50": round(percentile(durations, 0.50), 1),
            "seconds_max": round(max(durations, default=0.0), 1),
        },
        "failures": [r["log_tail"] for r in tally.runs if r["exit"] != 0][:2],
        "load_average_1min": {
            "mean": round(sum(tally.load) / len(tally.load), 1) if tally.load else None,
            "max": round(max(tally.load), 1) if tally.load else None,
        },
        "goal_p95_s": GOAL_P95_S,
        "met": bool(seconds) and percentile(seconds, 0.95) <= GOAL_P95_S,
        "spec_violations": len(violations),
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as the page bench/README.md quotes."""
    m, s, lat, runs = result["machine"], result["setup"], result["latency_s"], result["runs"]
    return "\n".join([
        "# Fast lane: webhook POST to Brevo's blocklist flag",
        "",
        f"Measured {result['when']} on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}.",
        f"Setup: `{s['runner']}` every {s['interval_s']:g} s, each following the spool for "
        f"{s['follow_s']:g} s; suppressions POSTed to the real "
        f"receiver for {s['minutes_of_posts']:g} minutes, one every {s['mean_gap_s']:g} s on "
        "average (exponential gaps).",
        "",
        "| samples | p50 | p95 | max | min | goal p95 | met |",
        "|---|---|---|---|---|---|---|",
        f"| {result['samples']} | {lat['p50']} s | {lat['p95']} s | {lat['max']} s | "
        f"{lat['min']} s | {result['goal_p95_s']:g} s | {'yes' if result['met'] else 'no'} |",
        "",
        f"Load average (1 min) during the run: {result['load_average_1min']['mean']} mean, "
        f"{result['load_average_1min']['max']} max, on {m['cores']} cores.",
        "",
        f"Fast-lane runs: {runs['count']} ({runs['failed']} failed, {runs['skipped']} skipped "
        "for a held store, "
        f"{runs['ticks_skipped_previous_still_running']} ticks skipped while one still ran); "
        f"a run took {runs['seconds_p50']} s (p50), {runs['seconds_max']} s at most. "
        f"Never blocklisted: {result['never_blocklisted']}. Spec violations: "
        f"{result['spec_violations']}.",
        "",
    ])  # fmt: skip


def main() -> None:
    """Parse the bounds, run, write JSON and Markdown, print the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10, help="how long to POST")
    parser.add_argument("--interval", type=float, default=60, help="seconds between runs")
    parser.add_argument("--gap", type=float, default=4, help="mean seconds between POSTs")
    parser.add_argument("--runner", choices=("meltano", "pipe"), default="meltano")
    parser.add_argument(
        "--follow", type=int, help="pipe runner: webhook_follow_seconds (default: meltano.yml's)"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fastlane_latency")
    args = parser.parse_args()
    if args.runner == "meltano" and args.follow is not None:
        parser.error("--follow is for --runner pipe; under Meltano, meltano.yml decides")
    if args.runner == "meltano" and not MELTANO.exists():
        parser.error(f"{MELTANO} not found: run `make meltano` first, or use --runner pipe")
    result = run(args)
    page = markdown(result)
    write_results(args.out, result, page)
    print(page)


if __name__ == "__main__":
    main()
