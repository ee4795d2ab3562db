"""`make bench-domains`: tap-mailgun over accounts of many sending domains, at a real latency.

Per account size (10, 100, 1,000 domains by default), against one fake Mailgun that answers
every request after `--latency` seconds (250 ms: a far region, or a busy API):
1. the account: N active domains, each with 20 events, a bounce, a complaint, an unsubscribe
   and a tag; the tap is given no `domains`, so it lists them as a user's run does;
2. a first run (no state), then 20 new events per domain, then an incremental run from the
   first run's last STATE;
3. for each run: requests by endpoint, wall time, and the floor: the requests made, those of
   per-domain endpoints divided by the concurrency (the Logs API's by its time slices), times
   the latency (what a run would take if the tap itself cost nothing); and the size of the
   last STATE.
Results go to bench/results/<name>.json and .md. Usage: `python -m bench.domains --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import calls
from bench.fakes import IndexedFakeMailgun
from bench.measure import console_script, host_cost, run_one
from bench.results import provenance, write_results
from bench.run import MAILGUN_KEY, ROOT, _write_json
from bench.singer_output import count
from fakes.events import mailgun_event
from tap_mailgun.event_logs import DEFAULT_CONCURRENT_TIME_SLICES
from tap_mailgun.streams import DEFAULT_CONCURRENT_DOMAINS

EVENTS_PER_DOMAIN = 20
LOGS_ENDPOINT = "POST /v1/analytics/logs"


def domain_names(n: int) -> list[str]:
    """N sending domains, one per customer of a platform."""
    return [f"c{i:05d}.example.com" for i in range(n)]


def load_account(fake: IndexedFakeMailgun, n: int, at: float) -> None:
    """N domains with 20 events each (an hour before `at`) and one of each suppression."""
    for i, name in enumerate(domain_names(n)):
        fake.add_domain(name)
        add_events(fake, name, at - 3600)
        created = datetime.fromtimestamp(at - 7200, tz=timezone.utc)
        stamp = created.strftime("%a, %d %b %Y %H:%M:%S UTC")
        fake.add_suppression(
            name,
            "bounces",
            {"address": f"b{i}@example.org", "code": "550", "error": "", "created_at": stamp},
        )
        fake.add_suppression(
            name, "complaints", {"address": f"c{i}@example.org", "count": 1, "created_at": stamp}
        )
        fake.add_suppression(
            name,
            "unsubscribes",
            {"address": f"u{i}@example.org", "tags": ["*"], "created_at": stamp},
        )
        fake.add_tag(name, f"campaign-{i % 50}")


def add_events(fake: IndexedFakeMailgun, domain: str, at: float, step: float = 1.0) -> None:
    """20 delivered events of `domain`, `step` seconds apart, the first at `at`."""
    fake.add_events(
        domain,
        [
            mailgun_event("delivered", at + k * step, domain=domain)
            for k in range(EVENTS_PER_DOMAIN)
        ],
    )


def last_state(path: Path) -> dict[str, Any]:
    """The value of the last STATE message of a Singer output file."""
    state: dict[str, Any] = {}
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(b'{"type":"STATE"') or b'"type": "STATE"' in line[:40]:
                state = json.loads(line)["value"]
    return state


def floor_seconds(
    by_endpoint: dict[str, int], concurrency: int, latency: float, slices: int = 1
) -> float:
    """The least wall time for these requests: per-domain endpoints `concurrency` at a time,
    the Logs API's `slices` at a time (its time slices), other account-wide ones one after
    the other, each costing `latency`."""
    per_domain = sum(n for e, n in by_endpoint.items() if "{domain}" in e)
    logs = by_endpoint.get(LOGS_ENDPOINT, 0)
    account = sum(by_endpoint.values()) - per_domain - logs
    parallel = per_domain / max(1, concurrency) + logs / max(1, slices)
    return round((account + parallel) * latency, 2)


def time_slices(args: argparse.Namespace) -> int:
    """Logs API slices read at a time: the setting given, else the tap's default."""
    return int(args.time_slices or DEFAULT_CONCURRENT_TIME_SLICES)


def concurrency(args: argparse.Namespace) -> int:
    """Domains read at a time: the setting given, or one when the tap is given none."""
    return int(args.concurrency) if args.concurrency_setting else 1


def _drain(fake: IndexedFakeMailgun) -> dict[str, int]:
    with fake.lock:
        recorded, fake.requests = fake.requests, []
    counted = Counter(f"{r.method} {calls.endpoint(r.path)}" for r in recorded)
    return dict(sorted(counted.items()))


def _run(
    label: str, argv: list[str], work: Path, fake: IndexedFakeMailgun, args: argparse.Namespace
) -> dict[str, Any]:
    out = work / f"{label}.singer"
    env = dict(os.environ)
    with host_cost() as host:
        run = run_one(argv, stdin=None, stdout=out, stderr=work / f"{label}.log", env=env)
    requests = _drain(fake)
    counts = count(out)
    state = last_state(out)
    state_path = work / f"{label}-state.json"
    state_path.write_text(json.dumps(state))
    return {
        "wall_s": run.wall_s,
        "cpu_s": round(run.cpu_s, 2),
        "max_rss_mb": run.max_rss_mb,
        "requests": sum(requests.values()),
        "requests_by_endpoint": requests,
        "floor_s": floor_seconds(requests, concurrency(args), args.latency, time_slices(args)),
        "records": counts.records,
        "state_bytes": state_path.stat().st_size,
        **host,
    }


def bench_account(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A first and an incremental run over an account of `n` domains."""
    work.mkdir(parents=True, exist_ok=True)
    fake = IndexedFakeMailgun(api_key=MAILGUN_KEY, validate=args.validate)
    now = time.time()
    load_account(fake, n, now)
    with fake:
        config: dict[str, Any] = {
            "api_key": MAILGUN_KEY,
            "base_url": fake.base_url,
            "start_date": datetime.fromtimestamp(now - 2 * 86400, tz=timezone.utc).isoformat(),
            "event_lag_minutes": 0,
        }
        if args.concurrency_setting:
            config["concurrent_domains"] = args.concurrency
        if args.time_slices:
            config["concurrent_time_slices"] = args.time_slices
        config_path = _write_json(work / "config.json", config)
        argv = [console_script("tap-mailgun"), "--config", str(config_path)]
        fake.latency = args.latency
        print(f"[{n}] first run", flush=True)
        first = _run("first", argv, work, fake, args)
        print(f"[{n}] first run: {first['wall_s']} s, {first['requests']} requests", flush=True)
        fake.latency = 0.0
        # New events come after the first run's window (as Mailgun stores them, within
        # event_lag_minutes), and before the incremental run's window end.
        new_at = time.time()
        for name in domain_names(n):
            add_events(fake, name, new_at, step=0.01)
        fake.latency = args.latency
        time.sleep(max(0.0, new_at + 1.5 - time.time()))
        incremental_argv = [*argv, "--state", str(work / "first-state.json")]
        second = _run("incremental", incremental_argv, work, fake, args)
        print(
            f"[{n}] incremental run: {second['wall_s']} s, {second['requests']} requests",
            flush=True,
        )
        violations = list(fake.violations)
    return {
        "domains": n,
        "first": first,
        "incremental": second,
        "checks": {
            "first run emits every event": first["records"].get("events", 0)
            == n * EVENTS_PER_DOMAIN,
            # The bookmark's own second is read again (BOOKMARK_MARGIN): at most one event
            # per domain comes twice, which the target applies once.
            "incremental run emits the new events": n * EVENTS_PER_DOMAIN
            <= second["records"].get("events", 0)
            <= n * (EVENTS_PER_DOMAIN + 1),
            "no spec violation": not violations,
        },
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    m = result["machine"]
    lines = [
        f"# Benchmark {result['name']}",
        "",
        f"{result['measured_at']}, commit {result['commit']}; {m['cpu_model']}, {m['cores']} "
        f"cores, Python {m['python']}, singer-sdk {m['singer_sdk']}; latency "
        f"{result['latency_s'] * 1000:.0f} ms, concurrency {result['concurrency']}, time "
        f"slices {result.get('time_slices') or 'default'}.",
        "",
        "| domains | run | requests | wall | floor | wall / floor | tap CPU | state |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for account in result["accounts"]:
        for label in ("first", "incremental"):
            run = account[label]
            ratio = run["wall_s"] / run["floor_s"] if run["floor_s"] else 0.0
            lines.append(
                f"| {account['domains']:,} | {label} | {run['requests']:,} | "
                f"{run['wall_s']:,.1f} s | {run['floor_s']:,.1f} s | {ratio:.2f}x | "
                f"{run['cpu_s']:.1f} s | {run['state_bytes'] / 1024:,.1f} KB |"
            )
    lines += ["", "Requests by endpoint (first / incremental):", ""]
    lines += ["| domains | endpoint | first | incremental |", "|---:|---|---:|---:|"]
    for account in result["accounts"]:
        first, second = account["first"], account["incremental"]
        endpoints = sorted({*first["requests_by_endpoint"], *second["requests_by_endpoint"]})
        for e in endpoints:
            lines.append(
                f"| {account['domains']:,} | `{e}` | {first['requests_by_endpoint'].get(e, 0):,}"
                f" | {second['requests_by_endpoint'].get(e, 0):,} |"
            )
    checks = all(all(a["checks"].values()) for a in result["accounts"])
    lines += ["", f"Checks: {'all pass' if checks else 'FAILED'}.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per answer")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENT_DOMAINS,
        help="concurrent_domains given to the tap",
    )
    parser.add_argument(
        "--no-concurrency-setting",
        dest="concurrency_setting",
        action="store_false",
        help="give the tap no concurrent_domains (a tap that has no such setting)",
    )
    parser.add_argument(
        "--time-slices",
        type=int,
        default=0,
        help="concurrent_time_slices given to the tap (the Logs API's window read in slices); "
        "0: the tap's default",
    )
    parser.add_argument("--validate", action="store_true", help="check requests against specs")
    parser.add_argument("--name", default="domains")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "domains")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results also written to disk."""
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    accounts = []
    for n in args.domains:
        work = args.work / str(n)
        shutil.rmtree(work, ignore_errors=True)
        accounts.append(bench_account(n, args, work))
    result = {
        "name": args.name,
        **provenance(),
        "latency_s": args.latency,
        "concurrency": concurrency(args),
        "time_slices": args.time_slices,
        "accounts": accounts,
    }
    write_results(args.results / args.name, result, markdown(result))
    print(f"results: {args.results / args.name}.json and .md", flush=True)
    return result


if __name__ == "__main__":
    main()
