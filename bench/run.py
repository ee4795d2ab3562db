"""`make bench`: tap-mailgun and target-brevo measured alone and piped, on a seeded workload.

One run, per workload size:
1. the seeded traffic generator (fakes/traffic.py) fills a fake Mailgun;
2. tap alone: the real `tap-mailgun` console script, stdout to a file;
3. target alone: the real `target-brevo` reading that file, into a fresh fake Brevo;
4. the two piped together, into another fresh fake Brevo;
5. API calls by endpoint, from what the fakes recorded, against the minimum the batch limits
   allow and against one call per event.
Results go to bench/results/<name>.json and .md. Usage: `python -m bench.run --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import calls, report
from bench.fakes import IndexedFakeMailgun
from bench.measure import ProcessRun, console_script, host_cost, run_one, run_pipe
from bench.profile import summary
from bench.results import provenance, write_results
from bench.singer_output import StreamCounts, count
from fakes import traffic
from fakes.brevo import BREVO_RATE_LIMITS, FakeBrevo

if TYPE_CHECKING:
    from fakes.server import FakeAPI

ROOT = Path(__file__).resolve().parents[1]
MAILGUN_KEY = "key-bench"
BREVO_KEY = "xkeysib-bench"
# Streams whose records the target turns into Brevo work; the per-event baseline is one call
# for each of their records (what a vendor sample doing one API call per event would make).
TARGET_STREAMS = ("events", "bounces", "complaints", "unsubscribes", "list_members")


def load_workload(
    fake: IndexedFakeMailgun,
    events: int,
    recipients: int,
    domains: int,
    seed: int,
    *,
    days: float = 30.0,
) -> dict[str, int]:
    """Fill the fake Mailgun with the seeded traffic generator, its messages sent over `days`;
    returns what went in."""
    names = traffic.DEFAULT_DOMAINS[:domains] + tuple(
        f"mg{i}.example.com" for i in range(len(traffic.DEFAULT_DOMAINS), domains)
    )
    spec = traffic.TrafficSpec.for_events(
        events, recipients=recipients, domains=names, seed=seed, days=days
    )
    # for_events guesses the events per message; one counting pass makes the size what was asked.
    produced = sum(1 for _ in traffic.Traffic(spec).events())
    spec = dataclasses.replace(spec, messages=max(1, round(spec.messages * events / produced)))
    return traffic.load(fake, traffic.Traffic(spec))


def _drain(fake: FakeAPI) -> list[calls.Call]:
    """The requests a fake recorded since the last drain, as calls; the record is emptied."""
    with fake.lock:
        recorded, fake.requests = fake.requests, []
    return [calls.Call(r.method, r.path, r.body) for r in recorded]


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


def _tap_config(work: Path, mailgun: IndexedFakeMailgun, start_date: str) -> Path:
    return _write_json(
        work / "tap-config.json",
        {
            "api_key": MAILGUN_KEY,
            "base_url": mailgun.base_url,
            "domains": sorted(mailgun.domains),
            "start_date": start_date,
        },
    )


def _target_config(work: Path, brevo: FakeBrevo, label: str) -> Path:
    lists = {kind: brevo.add_list(f"bench {kind}") for kind in ("engaged", "bounced", "complained")}
    store = work / f"engagement-{label}.sqlite"
    store.unlink(missing_ok=True)
    return _write_json(
        work / f"target-config-{label}.json",
        {
            "api_key": BREVO_KEY,
            "base_url": f"{brevo.base_url}/v3",
            "lists": lists,
            "engagement_store": str(store),
        },
    )


def _store_bytes(path: Path) -> int:
    """Size of a SQLite engagement store with its write-ahead log, if any."""
    files = (path, path.with_name(path.name + "-wal"))
    return sum(f.stat().st_size for f in files if f.exists())


def _brevo_summary(brevo: FakeBrevo) -> dict[str, Any]:
    """What the target left in Brevo, after every pending import was allowed to complete.

    Counts for people, and a digest of every contact, attribute, list and event, so two runs
    that left Brevo differently in any detail compare unequal.
    """
    brevo.settle()
    state = brevo.state()
    state.pop("processes")
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    with brevo.lock:
        members: Counter[str] = Counter()
        for contact in brevo.contacts.values():
            for list_id in contact["listIds"]:
                members[brevo.lists[list_id]["name"]] += 1
        return {
            "contacts": len(brevo.contacts),
            "blocklisted": sum(bool(c.get("emailBlacklisted")) for c in brevo.contacts.values()),
            "list_members": dict(sorted(members.items())),
            "events": len(brevo.events),
            "events_by_name": dict(
                sorted(Counter(e.get("event_name") for e in brevo.events).items())
            ),
            "state_digest": digest,
        }


def _rates(n: int, run: ProcessRun) -> dict[str, float]:
    """Events per second of wall time (the goal) and per second of the process's own CPU."""
    return {
        "events_per_s": round(n / run.wall_s, 1) if run.wall_s else 0.0,
        "events_per_cpu_s": round(n / run.cpu_s, 1) if run.cpu_s else 0.0,
    }


def _profile(argv: list[str], stdin: Path | None, work: Path, name: str, results: Path) -> str:
    """Run one command under py-spy and write the folded summary next to the results."""
    raw = work / f"{name}.pyspy.txt"
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
    spy += ["--rate", "100", "--output", str(raw), "--", *argv]
    run_one(
        spy,
        stdin=stdin,
        stdout=work / f"{name}.profiled.out",
        stderr=work / f"{name}.profiled.log",
        env=dict(os.environ),
    )
    out = results / f"profile-{name}.txt"
    out.write_text(summary(raw, f"{name}: {Path(argv[0]).name}"))
    return out.name


@contextlib.contextmanager
def _fresh_brevo(
    work: Path, label: str, validate: bool, rate_limits: dict[str, tuple[int, float]] | None = None
) -> Iterator[tuple[FakeBrevo, list[str]]]:
    """A new, empty fake Brevo and the target command line that writes into it.

    `rate_limits`: buckets the fake enforces with 429s (by default it only reports a larger
    plan's limits, so the target is measured, not Brevo's pace).
    """
    brevo = FakeBrevo(api_key=BREVO_KEY, validate=validate, rate_limits=rate_limits)
    with brevo:
        config = _target_config(work, brevo, label)
        yield brevo, [console_script("target-brevo"), "--config", str(config)]


def bench_one(size: int, args: argparse.Namespace, work: Path, results: Path) -> dict[str, Any]:
    """Measure tap, target and pipeline on one workload size."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    violations: list[str] = []
    mailgun = IndexedFakeMailgun(api_key=MAILGUN_KEY, validate=args.validate)
    with mailgun:
        started = time.perf_counter()
        workload = load_workload(mailgun, size, args.recipients, args.domains, args.seed)
        generated_s = round(time.perf_counter() - started, 2)
        loaded = {d: len(e) for d, e in mailgun.events.items()}
        oldest = min(float(e[0]["timestamp"]) for e in mailgun.events.values() if e)
        start_date = datetime.fromtimestamp(oldest - 3600, tz=timezone.utc).isoformat()
        config = _tap_config(work, mailgun, start_date)
        tap_argv = [console_script("tap-mailgun"), "--config", str(config)]
        tap_out = work / "tap.singer"
        print(f"[{size}] workload loaded in {generated_s}s; running the tap", flush=True)

        tap_tries = []
        for _ in range(args.repeat):
            with host_cost() as host:
                run = run_one(
                    tap_argv, stdin=None, stdout=tap_out, stderr=work / "tap.log", env=env
                )
            tap_tries.append((run, host, _drain(mailgun)))
            print(f"[{size}] tap: {run.wall_s}s", flush=True)
        tap_run, tap_host, _ = min(tap_tries, key=lambda t: t[0].wall_s)
        mailgun_calls = tap_tries[0][2]
        counts = count(tap_out)

        target_tries = []
        for i in range(args.repeat):
            with _fresh_brevo(work, f"alone-{i}", args.validate) as (brevo, target_argv):
                with host_cost() as host:
                    run = run_one(
                        target_argv,
                        stdin=tap_out,
                        stdout=work / "target.state",
                        stderr=work / "target.log",
                        env=env,
                    )
                target_tries.append((run, host, _drain(brevo), _brevo_summary(brevo)))
                violations += brevo.violations
            print(f"[{size}] target: {run.wall_s}s", flush=True)
        target_run, target_host, _, _ = min(target_tries, key=lambda t: t[0].wall_s)
        _, _, brevo_calls, alone = target_tries[0]
        store_mb = round(_store_bytes(work / "engagement-alone-0.sqlite") / 1e6, 1)

        paced = _paced_target(tap_out, work, args.validate, env)
        violations += paced.pop("violations")
        print(f"[{size}] target at Brevo's pace: {paced['wall_s']}s", flush=True)

        with _fresh_brevo(work, "piped", args.validate) as (brevo, target_argv):
            with host_cost() as pipe_host:
                left, right, pipe_wall = run_pipe(
                    tap_argv,
                    target_argv,
                    stdout=work / "pipeline.state",
                    stderr_left=work / "pipeline-tap.log",
                    stderr_right=work / "pipeline-target.log",
                    env=env,
                )
            piped = _brevo_summary(brevo)
            violations += brevo.violations
        print(f"[{size}] pipeline: {pipe_wall}s", flush=True)

        profiles: list[str] = []
        if args.profile and size == args.events[0]:  # the hot paths are the same at any size
            profiles.append(_profile(tap_argv, None, work, f"tap-{size}", results))
            with _fresh_brevo(work, "profiled", args.validate) as (brevo, target_argv):
                profiles.append(_profile(target_argv, tap_out, work, f"target-{size}", results))
        violations += mailgun.violations

    baseline = sum(counts.records.get(s, 0) for s in TARGET_STREAMS)
    return {
        "events": sum(loaded.values()),
        "events_asked": size,
        "recipients": args.recipients,
        "domains": args.domains,
        "seed": args.seed,
        "workload": {"generated_s": generated_s, "events_loaded": loaded, **workload},
        "tap": {
            **tap_run.as_dict(),
            "records": counts.records,
            **_rates(counts.events, tap_run),
            **tap_host,
            "walls_s": [t[0].wall_s for t in tap_tries],
            "output_mb": round(tap_out.stat().st_size / 1e6, 1),
        },
        "target": {
            **target_run.as_dict(),
            **_rates(counts.events, target_run),
            **target_host,
            "walls_s": [t[0].wall_s for t in target_tries],
            "engagement_store_mb": store_mb,
        },
        "repeat": args.repeat,
        "pipeline": {
            "wall_s": pipe_wall,
            "events_per_s": round(counts.events / pipe_wall, 1) if pipe_wall else 0.0,
            **pipe_host,
            "tap": left.as_dict(),
            "target": right.as_dict(),
        },
        "paced": paced,
        "brevo_after_target_alone": alone,
        "brevo_after_pipeline": piped,
        "spec_validated": args.validate,
        "spec_violations": violations[:20],
        "checks": {
            **_checks(loaded, counts, alone, piped),
            "repeated_target_runs_same_brevo_state": all(t[3] == alone for t in target_tries),
            "paced_run_same_brevo_state": paced.pop("brevo") == alone,
            "no_spec_violations": not violations,
        },
        "calls": {
            "brevo": calls.brevo_table(brevo_calls, baseline),
            "mailgun": calls.mailgun_table(mailgun_calls, counts.records, counts.by_owner),
        },
        "profiles": profiles,
    }


def _paced_target(tap_out: Path, work: Path, validate: bool, env: dict[str, str]) -> dict[str, Any]:
    """The target alone against a fake Brevo that enforces Brevo's general-plan limits (10
    calls a second on contacts and on events, answering 429 past them): its wall time against
    the least its calls need at that pace (`calls.rate_limit_floor`).
    """
    with _fresh_brevo(work, "paced", validate, BREVO_RATE_LIMITS) as (brevo, target_argv):
        run = run_one(
            target_argv,
            stdin=tap_out,
            stdout=work / "paced.state",
            stderr=work / "paced.log",
            env=env,
        )
        with brevo.lock:
            recorded, brevo.requests = brevo.requests, []
        # the floor counts the calls that did the work: a 429 is a call wasted, not work
        made = [calls.Call(r.method, r.path, r.body) for r in recorded if r.status != 429]
        refused = len(recorded) - len(made)
        floor = calls.rate_limit_floor(calls.brevo_table(made, 0)["endpoints"])
        return {
            "wall_s": run.wall_s,
            "cpu_s": run.cpu_s,
            "calls": len(made),
            "refused_429": refused,
            "floor_s": floor,
            "pace_ratio": round(run.wall_s / floor, 2) if floor else None,
            "brevo": _brevo_summary(brevo),
            "violations": list(brevo.violations),
        }


def _checks(
    loaded: dict[str, int], counts: StreamCounts, alone: dict[str, Any], piped: dict[str, Any]
) -> dict[str, bool]:
    """Sanity of the run: nothing lost on the way, and piping changes nothing."""
    return {
        "tap_emitted_every_loaded_event": counts.events == sum(loaded.values()),
        "events_by_domain_match": counts.events_by_domain == {d: n for d, n in loaded.items() if n},
        "pipeline_same_brevo_state_as_alone": alone == piped,
        "brevo_received_events": alone["events"] > 0,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        nargs="+",
        default=[100_000],
        metavar="N",
        help="workload sizes, measured in turn (default 100000; `--events 100000 1000000` "
        "measures the scaling)",
    )
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--domains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument(
        "--profile", action="store_true", help="also profile tap and target with py-spy"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run tap alone and target alone N times each and keep the fastest (default 1)",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="check every request against the vendors' OpenAPI specs (slow; for the harness test)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work", help="scratch files")
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the scratch files (tap output, logs, stores) of successful runs too",
    )
    parser.add_argument("--name", help="results file name (default from the sizes)")
    return parser.parse_args(argv)


def _name(sizes: list[int]) -> str:
    def short(n: int) -> str:
        return (
            f"{n // 1_000_000}m"
            if n % 1_000_000 == 0
            else f"{n // 1000}k"
            if n % 1000 == 0
            else str(n)
        )

    return ("bench-" if len(sizes) == 1 else "scaling-") + "-".join(short(n) for n in sizes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results also written to disk."""
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in args.events:
        work = args.work / str(size)
        shutil.rmtree(work, ignore_errors=True)
        runs.append(bench_one(size, args, work, args.results))
        if not args.keep_work:  # a million events leave ~2 GB of scratch; failures keep theirs
            shutil.rmtree(work, ignore_errors=True)
    name = args.name or _name(args.events)
    result = {"name": name, **provenance(), "runs": runs, "goals": report.goals(runs)}
    write_results(args.results / name, result, report.markdown(result))
    print(f"results: {args.results / name}.json and .md", flush=True)
    return result


if __name__ == "__main__":
    main()
