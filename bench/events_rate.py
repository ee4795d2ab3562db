"""`make bench-events`: events per second of wall time, Logs API against Events API, with a
fixed latency added to every Mailgun answer (250 ms by default, a distant API's).

The seeded traffic generator fills the indexed fake Mailgun (bench/fakes.py) over a few
domains; the real `tap-mailgun` console script reads only the `events` stream, once with
`event_source: logs` and once with `event_source: events`; each rate is event records over
the process's wall time (start-up included). Page sizes bound both: sequential pages of 100
(Logs API) cost a latency each, pages of 300 (Events API) too, per domain.
Results go to bench/results/events-rate.json and .md. Usage: `python -m bench.events_rate -h`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.fakes import IndexedFakeMailgun
from bench.measure import console_script, machine, run_one
from bench.results import write_results
from bench.run import MAILGUN_KEY, ROOT, load_workload
from bench.singer_output import count
from fakes.tap_catalog import write_catalog
from tap_mailgun.event_logs import DEFAULT_CONCURRENT_TIME_SLICES

SOURCES = ("logs", "events")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the workload, then run the tap once per event source; every figure."""
    work = ROOT / "bench" / "work" / "events-rate"
    work.mkdir(parents=True, exist_ok=True)
    tap = console_script("tap-mailgun")
    mailgun = IndexedFakeMailgun(api_key=MAILGUN_KEY, validate=False)
    runs: dict[str, Any] = {}
    with mailgun:
        days = args.window_minutes / 1440 if args.window_minutes else 30.0
        load_workload(mailgun, args.events, args.recipients, args.domains, args.seed, days=days)
        oldest = min(float(e[0]["timestamp"]) for e in mailgun.events.values() if e)
        start_date = datetime.fromtimestamp(oldest - 3600, tz=timezone.utc).isoformat()
        end_date = None
        if args.window_minutes:  # one busy run's window: its messages' first events only
            start = datetime.fromtimestamp(int(oldest), tz=timezone.utc)
            start_date = start.isoformat()
            end_date = (start + timedelta(minutes=args.window_minutes)).isoformat()
        for source in SOURCES:
            config = work / f"tap-{source}.json"
            settings = {
                "api_key": MAILGUN_KEY,
                "base_url": mailgun.base_url,
                "domains": sorted(mailgun.domains),
                "start_date": start_date,
                "end_date": end_date,
                "event_source": source,
                "concurrent_time_slices": args.slices,
            }
            config.write_text(json.dumps(settings))
            catalog = write_catalog(tap, config, work / "catalog.json", "events")
            with mailgun.lock:
                mailgun.requests.clear()
            mailgun.latency = args.latency_ms / 1000
            out = work / f"tap-{source}.singer"
            run = run_one(
                [tap, "--config", str(config), "--catalog", str(catalog)],
                stdin=None,
                stdout=out,
                stderr=work / f"tap-{source}.log",
                env=dict(os.environ),
            )
            mailgun.latency = 0.0
            events = count(out).events
            with mailgun.lock:
                requests = Counter(f"{r.method} {r.path.split('/')[1]}" for r in mailgun.requests)
            runs[source] = {
                "events": events,
                "wall_s": round(run.wall_s, 2),
                "cpu_s": round(run.cpu_s, 2),
                "events_per_s": round(events / run.wall_s),
                "mailgun_requests": sum(requests.values()),
            }
            print(f"{source}: {runs[source]}", flush=True)
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "latency_ms": args.latency_ms,
        "loaded_events": args.events,
        "window_minutes": args.window_minutes,
        "concurrent_time_slices": args.slices,
        "domains": args.domains,
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    m = result["machine"]
    lines = [
        f"`make bench-events` ({result['when']}; {m['cpu_model']}, {m['cores']} cores, "
        f"Python {m['python']}, singer-sdk {m['singer_sdk']}): {result['loaded_events']:,} "
        f"events over {result['domains']} domains, {result['latency_ms']} ms added to every "
        f"Mailgun answer; logs read {result['concurrent_time_slices']} time slices at once"
        + (
            f"; messages sent over {result['window_minutes']} minutes, the window those minutes."
            if result.get("window_minutes")
            else "."
        ),
        "",
        "| event_source | events | wall | Mailgun requests | events/s of wall time |",
        "|---|---:|---:|---:|---:|",
    ]
    for source, run in result["runs"].items():
        lines.append(
            f"| {source} | {run['events']:,} | {run['wall_s']} s | {run['mailgun_requests']} | "
            f"**{run['events_per_s']:,}** |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line; see the module's docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.events_rate", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--domains", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument(
        "--slices",
        type=int,
        default=DEFAULT_CONCURRENT_TIME_SLICES,
        help="concurrent_time_slices (logs); the tap's default by default",
    )
    parser.add_argument(
        "--window-minutes",
        type=float,
        help="send the messages over this many minutes and read exactly those minutes (one "
        "busy account's incremental run) instead of 30 days from an hour before the first",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "events-rate")
    args = parser.parse_args(argv)
    result = measure(args)
    page = markdown(result)
    write_results(args.out, result, page)
    print(page)
    return result


if __name__ == "__main__":
    main()
