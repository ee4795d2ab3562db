"""`make bench-webhooks`: the webhook receiver under load on loopback, then killed mid-load.

Bounded in count (--requests) and time (--max-seconds). Against the real `tap-mailgun-webhooks`
console script on a fresh spool:
1. sustained: several concurrent keep-alive clients send signed Mailgun calls (a share of them
   redeliveries of an event already sent, with a new signature, as Mailgun retries do);
   reports accepted requests/s and latency percentiles;
2. kill and restart: the same load, the receiver SIGKILLed mid-way and restarted on the same
   spool and port; calls that got no answer are resent with a new signature, as Mailgun would.
Both phases check the spool afterwards: every call answered 200 is in it, it holds each unique
event exactly once (zero lost, zero doubled). Results: bench/results/webhooks_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.measure import machine
from bench.results import write_results
from fakes.events import mailgun_event
from fakes.receiver_process import ReceiverProcess
from fakes.webhook_payloads import signed_body
from mailgun_webhooks.app import WEBHOOK_PATH
from mailgun_webhooks.spool import Spool

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED_PER_S_GOAL = 1000
EVENTS = ("delivered", "opened", "clicked", "failed", "complained", "unsubscribed", "accepted")


@dataclass
class Tally:
    """What the clients saw."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    acknowledged: set[tuple[str, float]] = field(default_factory=set)  # events answered 200
    connection_errors: int = 0
    sent: int = 0


def workload(count: int, redelivery_share: float, seed: int) -> list[dict[str, Any]]:
    """`count` events to send; a share are redeliveries of an earlier one (same id and time)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(count):
        if events and rng.random() < redelivery_share:
            events.append(rng.choice(events))
        else:
            name = rng.choice(EVENTS)
            recipient = f"user{rng.randrange(50_000)}@example.org"
            events.append(mailgun_event(name, recipient=recipient, event_id=f"bench-{i}"))
    return events


def request_bytes(port: int, body: bytes) -> bytes:
    """One HTTP/1.1 keep-alive POST of a webhook body."""
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed by the receiver")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def client(
    port: int, work: asyncio.Queue[dict[str, Any]], tally: Tally, key: str, stop_at: float
) -> None:
    """One keep-alive connection sending from the shared queue; unanswered calls are re-queued."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < stop_at:
        try:
            event = work.get_nowait()
        except asyncio.QueueEmpty:
            break
        request = request_bytes(port, signed_body(event, key))  # signed now, as Mailgun does
        started = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            status = await _exchange(*conn, request)
        except (OSError, asyncio.IncompleteReadError):  # the receiver is down: retry later
            tally.connection_errors += 1
            conn = None
            work.put_nowait(event)
            await asyncio.sleep(0.05)
            continue
        tally.sent += 1
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == 200:
            tally.acknowledged.add((event["id"], event["timestamp"]))
        else:
            work.put_nowait(event)  # a 503 is retried like Mailgun does
    if conn is not None:
        conn[1].close()


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of the sorted values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def check_spool(spool_path: Path, events: list[dict[str, Any]], tally: Tally) -> dict[str, Any]:
    """Lost (answered 200 but not spooled) and doubled (spooled more than once) events."""
    with Spool(spool_path) as spool:
        keys = spool.event_keys()
    spooled = set(keys)
    unique_sent = {(e["id"], e["timestamp"]) for e in events}
    return {
        "unique_events_sent": len(unique_sent),
        "spooled": len(keys),
        "lost": len(tally.acknowledged - spooled),
        "doubled": len(keys) - len(spooled),
        "unacknowledged": len(unique_sent - tally.acknowledged),
        "spool_equals_unique_sent": spooled == unique_sent and len(keys) == len(unique_sent),
    }


async def _load(
    port: int, events: list[dict[str, Any]], key: str, clients: int, max_s: float
) -> tuple[Tally, asyncio.Queue[dict[str, Any]], list[asyncio.Task[None]], float]:
    work: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in events:
        work.put_nowait(event)
    tally = Tally()
    stop_at = time.monotonic() + max_s
    tasks = [asyncio.create_task(client(port, work, tally, key, stop_at)) for _ in range(clients)]
    return tally, work, tasks, time.perf_counter()


async def sustained(
    spool: Path, events: list[dict[str, Any]], key: str, clients: int, max_s: float
) -> dict[str, Any]:
    """Phase 1: the whole workload through one receiver."""
    receiver = await asyncio.to_thread(ReceiverProcess, spool, key=key)
    try:
        tally, _, tasks, started = await _load(receiver.port, events, key, clients, max_s)
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    finally:
        receiver.stop()
    return {
        "requests": tally.sent,
        "clients": clients,
        "wall_s": round(wall, 2),
        "accepted_per_s": round(tally.statuses.get(200, 0) / wall, 1),
        "latency_ms": {
            "p50": round(percentile(tally.latencies_ms, 0.50), 2),
            "p99": round(percentile(tally.latencies_ms, 0.99), 2),
            "max": round(max(tally.latencies_ms, default=0.0), 2),
        },
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        **check_spool(spool, events, tally),
    }


async def kill_and_restart(
    spool: Path, events: list[dict[str, Any]], key: str, clients: int, max_s: float
) -> dict[str, Any]:
    """Phase 2: SIGKILL the receiver once a third of the calls are answered, restart it."""
    receiver = await asyncio.to_thread(ReceiverProcess, spool, key=key)
    tally, _, tasks, _ = await _load(receiver.port, events, key, clients, max_s)
    while tally.sent < len(events) // 3 and not all(t.done() for t in tasks):
        await asyncio.sleep(0.005)
    acknowledged_before_kill = len(tally.acknowledged)
    receiver.stop(signal.SIGKILL)
    restarted = await asyncio.to_thread(ReceiverProcess, spool, key=key, port=receiver.port)
    try:
        await asyncio.gather(*tasks)
    finally:
        restarted.stop()
    return {
        "killed_after_acknowledged": acknowledged_before_kill,
        "connection_errors_while_down": tally.connection_errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        **check_spool(spool, events, tally),
    }


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the issue with the figure it was judged on."""
    s, k = result["sustained"], result["kill_and_restart"]
    return {
        "accepted_per_s": {
            "goal": f">= {ACCEPTED_PER_S_GOAL}",
            "value": s["accepted_per_s"],
            "met": s["accepted_per_s"] >= ACCEPTED_PER_S_GOAL,
        },
        "zero_lost_zero_doubled": {
            "goal": "spool == unique events sent, in both phases",
            "value": f"lost {s['lost'] + k['lost']}, doubled {s['doubled'] + k['doubled']}",
            "met": s["spool_equals_unique_sent"] and k["spool_equals_unique_sent"],
        },
        "every_200_spooled_after_kill": {
            "goal": "0 acknowledged events missing after SIGKILL + restart",
            "value": k["lost"],
            "met": k["lost"] == 0 and k["killed_after_acknowledged"] > 0,
        },
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    m, s, k = result["machine"], result["sustained"], result["kill_and_restart"]
    lines = [
        "# Webhook receiver under load",
        "",
        f"Measured {result['measured_at']} on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}; client and receiver share "
        f"the machine (loopback); load average at start {result['load_average_at_start']}. "
        "Command: `make bench-webhooks`.",
        "",
        "## Sustained load",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| requests answered | {s['requests']:,} from {s['clients']} keep-alive clients |",
        f"| accepted (200) per second | {s['accepted_per_s']:,} |",
        f"| latency p50 / p99 / max | {s['latency_ms']['p50']} / {s['latency_ms']['p99']} / "
        f"{s['latency_ms']['max']} ms |",
        f"| answers | {s['statuses']} |",
        f"| unique events sent / spooled | {s['unique_events_sent']:,} / {s['spooled']:,} |",
        f"| lost / doubled | {s['lost']} / {s['doubled']} |",
        "",
        "## Kill (SIGKILL) mid-load and restart",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| events acknowledged before the kill | {k['killed_after_acknowledged']:,} |",
        f"| connection errors while down (resent) | {k['connection_errors_while_down']:,} |",
        f"| unique events sent / spooled | {k['unique_events_sent']:,} / {k['spooled']:,} |",
        f"| acknowledged but missing / doubled | {k['lost']} / {k['doubled']} |",
        "",
        "## Goals",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
    ]
    for name, v in result["goals"].items():
        lines.append(f"| {name} | {v['goal']} | {v['value']} | {'yes' if v['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both phases on fresh spools in a temporary folder."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # others' work skews the figures
    key = secrets.token_hex(16)
    events = workload(args.requests, args.redelivery_share, args.seed)
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-") as tmp:
        first = await sustained(
            Path(tmp, "a", "spool.sqlite"), events, key, args.clients, args.max_seconds
        )
        second = await kill_and_restart(
            Path(tmp, "b", "spool.sqlite"), events, key, args.clients, args.max_seconds
        )
    result: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": load_before,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sustained": first,
        "kill_and_restart": second,
    }
    result["goals"] = verdicts(result)
    return result


def main() -> None:
    """Parse the bounds, run, write JSON and Markdown, print the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="calls per phase")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--max-seconds", type=float, default=120, help="time bound per phase")
    parser.add_argument("--redelivery-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhooks_load")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    page = markdown(result)
    write_results(args.out, result, page)
    print(page)


if __name__ == "__main__":
    main()
