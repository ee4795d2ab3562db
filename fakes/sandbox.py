"""The sandbox: the project's fake Mailgun and fake Brevo, seeded, on fixed loopback ports.

    python -m fakes.sandbox demo      # what `make demo` runs: one pipeline run + summary
    python -m fakes.sandbox serve     # keep both fakes up, for `meltano` by hand
    python -m fakes.sandbox summary   # print what a running sandbox's Brevo holds
    python -m fakes.sandbox reset     # forget everything (sandbox data and its Meltano state)

How it keeps its data between runs, so a second run moves only what is new:
- Mailgun is regenerated on every start from a persisted seed and clock (.sandbox/clock.json)
  by `fakes.traffic`, which gives the same traffic before a moment whatever comes after.
  The simulated world is 60 days that end at the last midnight (UTC) at least an hour ago, so
  all of it is already history for the tap (which reads up to 30 minutes ago). The first start
  shows its first 29 days; every `demo` then moves the clock a whole simulated day forward,
  whatever the hour, so each run has a new day of traffic (31 runs, then `reset`). The tap
  reads up to the simulated present (`end_date`), not the real one: a window read to its end
  is never read again (`read_through`), so the day a later run reveals must come after it.
- Brevo's state (contacts, attributes, lists, events) is saved to .sandbox/brevo.json on stop
  and loaded on start.
- Meltano keeps the tap's state in its system database (.meltano/meltano.db), under the state
  id of the `sandbox` environment, apart from `dev`.
- Ports: 18081 and 18082, where meltano.yml's `sandbox` environment points; when another
  program holds one, the fake listens on a free port instead and the demo hands that to
  Meltano (environment variables override meltano.yml). A folder is used by one sandbox at a
  time (.sandbox/running.pid): a second one is refused, naming the process to stop.

The fakes are the test fakes (fakes/mailgun.py, fakes/brevo.py), spec-checked: a
request the real API would refuse is answered 400 and reported at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from fakes.brevo import FakeBrevo
from fakes.mailgun import FakeMailgun
from fakes.server import FakeAPI
from fakes.traffic import DEFAULT_DOMAINS, Traffic, TrafficSpec, load
from target_brevo.rules import DEFAULT_EVENT_NAMES, event_name_key
from target_brevo.settings import DEFAULT_ALL_LIST_NAME

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_DIR = ROOT / ".sandbox"
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
# The ports and keys the `sandbox` environment of meltano.yml points at.
MAILGUN_PORT = 18081
BREVO_PORT = 18082
MAILGUN_KEY = "key-sandbox"
BREVO_KEY = "xkeysib-sandbox"
# Created in this order on a fresh Brevo, so their ids (1, 2, 3) match meltano.yml's `lists`.
BREVO_LISTS = ("Engaged", "Bounced", "Complained")
STATE_ID = "sandbox:tap-mailgun-to-target-brevo"

SEED = 2026
WINDOW_DAYS = 60  # the simulated world; the clock reveals it a day per demo run
FIRST_DAYS = 29
MESSAGES_PER_DAY = 150
RECIPIENTS = 400
MIN_AGE = timedelta(hours=1)  # traffic stays older than the tap's event lag (30 min)
DAY = timedelta(days=1)
F = TypeVar("F", bound=FakeAPI)


# --- the clock --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clock:
    """The sandbox's simulated present: traffic exists from `start` up to `now`.

    The seed and the size are kept with it, since the traffic before `now` depends on them.
    """

    seed: int
    start: datetime
    now: datetime
    messages_per_day: int = MESSAGES_PER_DAY
    recipients: int = RECIPIENTS

    @classmethod
    def first(
        cls,
        real_now: datetime,
        *,
        seed: int = SEED,
        messages_per_day: int = MESSAGES_PER_DAY,
        recipients: int = RECIPIENTS,
    ) -> Clock:
        """The first 29 days of a 60-day world that ends at the last midnight (UTC) at least
        an hour ago: each of the 31 advances left is a whole day, whatever the hour."""
        end = (
            (real_now - MIN_AGE)
            .astimezone(timezone.utc)
            .replace(hour=0, minute=0, second=0, microsecond=0)
        )
        start = end - timedelta(days=WINDOW_DAYS)
        return cls(seed, start, start + timedelta(days=FIRST_DAYS), messages_per_day, recipients)

    @property
    def end(self) -> datetime:
        """The end of the simulated world: the clock goes no further."""
        return self.start + timedelta(days=WINDOW_DAYS)

    def advanced(self, real_now: datetime, by: timedelta = DAY) -> Clock:
        """A simulated day later, but never past the world's end nor into the last hour (which
        only a clock saved by an older sandbox, whose world reached the present, can meet)."""
        limit = min(real_now - MIN_AGE, self.end)
        return replace(self, now=max(self.now, min(self.now + by, limit)))

    def spec(self) -> TrafficSpec:
        """The traffic this clock reveals."""
        return TrafficSpec(
            seed=self.seed,
            start=self.start,
            days=WINDOW_DAYS,
            messages=WINDOW_DAYS * self.messages_per_day,
            recipients=self.recipients,
            domains=DEFAULT_DOMAINS,
            until=self.now,
        )

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {**asdict(self), "start": self.start.isoformat(), "now": self.now.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Clock:
        """Read the persisted form back."""
        fields = {
            **data,
            "start": datetime.fromisoformat(data["start"]),
            "now": datetime.fromisoformat(data["now"]),
        }
        return cls(**fields)


# --- Brevo that survives restarts -------------------------------------------------------------
class PersistentBrevo(FakeBrevo):
    """The fake Brevo, plus loading and saving its state as the JSON of GET /_fake/state."""

    def restore(self, state: dict[str, Any]) -> None:
        """Take over a saved state; new ids continue after the saved ones."""
        with self.lock:
            self.contacts = {
                email: {**contact, "listIds": set(contact["listIds"])}
                for email, contact in state["contacts"].items()
            }
            self.attributes = dict(state["attributes"])
            self.lists = {int(k): v for k, v in state["lists"].items()}
            self.events = list(state["events"])
            self._next_id["list"] = max(self.lists, default=0) + 1
            self._next_id["contact"] = (
                max((c.get("id", 0) for c in self.contacts.values()), default=0) + 1
            )
            self._next_id["process"] = max(map(int, state.get("processes", {})), default=0) + 1

    def save(self, path: Path) -> None:
        """Write the state atomically (a crash leaves the previous file intact)."""
        self.settle()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state()))
        tmp.replace(path)


# --- the sandbox ------------------------------------------------------------------------------
class SandboxInUse(Exception):
    """Another running sandbox uses the same folder: two would overwrite each other's data."""


def _in_use_by(directory: Path) -> str | None:
    """The other live process running a sandbox on `directory`, described, or None."""
    try:
        pid = int((directory / "running.pid").read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it died without cleaning up
    except PermissionError:
        pass
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        return f"process {pid} ({command})"
    return f"process {pid}"


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (0 always can)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the fakes' server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listening(make: Callable[[int], F], port: int, name: str, notes: list[str]) -> F:
    """The fake on `port`, or on a free port when another program holds it (said in `notes`)."""
    if port_is_free(port):
        return make(port)
    fake = make(0)
    notes.append(
        f"Port {port} is taken by another program, so the fake {name} listens on "
        f"{fake.base_url} instead (Meltano is told so)."
    )
    return fake


class Sandbox:
    """Both fakes, seeded from `directory` and saved back to it on stop.

    Ports 0 pick free ports (tests); a taken port is replaced by a free one, said in `notes`.
    `env()` gives the variables that point Meltano's `sandbox` environment at wherever the
    fakes listen. `shown_before` is where the clock stood before this start moved it (None on
    the first start).
    """

    def __init__(
        self,
        directory: Path = SANDBOX_DIR,
        *,
        mailgun_port: int = MAILGUN_PORT,
        brevo_port: int = BREVO_PORT,
        validate: bool = True,
        advance: bool = False,
        real_now: datetime | None = None,
        messages_per_day: int = MESSAGES_PER_DAY,
        recipients: int = RECIPIENTS,
    ) -> None:
        self.directory = directory
        self.running = False
        self.notes: list[str] = []
        directory.mkdir(parents=True, exist_ok=True)
        other = _in_use_by(directory)
        if other is not None:
            raise SandboxInUse(
                f"The sandbox in {directory} is in use by {other}: stop that program (Ctrl-C "
                "in its shell), then run this again."
            )
        real_now = real_now or datetime.now(timezone.utc)
        clock_file = directory / "clock.json"
        self.shown_before: datetime | None = None
        if clock_file.exists():
            self.clock = Clock.from_json(json.loads(clock_file.read_text()))
            self.shown_before = self.clock.now
            if advance:
                self.clock = self.clock.advanced(real_now)
        else:  # the size only matters to a new sandbox: an existing one keeps its own
            self.clock = Clock.first(
                real_now, messages_per_day=messages_per_day, recipients=recipients
            )
        clock_file.write_text(json.dumps(self.clock.to_json()))
        self.traffic = Traffic(self.clock.spec())
        self.mailgun = _listening(
            lambda port: FakeMailgun(api_key=MAILGUN_KEY, validate=validate, port=port),
            mailgun_port,
            "Mailgun",
            self.notes,
        )
        self.loaded = load(self.mailgun, self.traffic)
        self.brevo = _listening(
            lambda port: PersistentBrevo(api_key=BREVO_KEY, validate=validate, port=port),
            brevo_port,
            "Brevo",
            self.notes,
        )
        brevo_file = directory / "brevo.json"
        if brevo_file.exists():
            self.brevo.restore(json.loads(brevo_file.read_text()))
        else:
            for name in BREVO_LISTS:
                self.brevo.add_list(name)

    def start(self) -> Sandbox:
        """Serve both fakes."""
        self.mailgun.start()
        self.brevo.start()
        self.running = True
        (self.directory / "running.pid").write_text(str(os.getpid()))
        return self

    def stop(self) -> None:
        """Save Brevo's state and stop serving (once; later calls do nothing)."""
        if not self.running:
            return
        self.running = False
        self.brevo.save(self.directory / "brevo.json")
        self.mailgun.stop()
        self.brevo.stop()
        (self.directory / "running.pid").unlink(missing_ok=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Settings for `meltano --environment=sandbox` that depend on this sandbox instance."""
        return {
            "TAP_MAILGUN_BASE_URL": self.mailgun.base_url,
            "TAP_MAILGUN_API_KEY": MAILGUN_KEY,
            "TAP_MAILGUN_START_DATE": self.clock.start.isoformat(),
            "TAP_MAILGUN_END_DATE": self.clock.now.isoformat(),
            "TARGET_BREVO_BASE_URL": f"{self.brevo.base_url}/v3",
            "TARGET_BREVO_API_KEY": BREVO_KEY,
            "TARGET_BREVO_ENGAGEMENT_STORE": str(self.directory / "engagement.sqlite"),
            "MAILGUN_VALIDATE_MAPPER_BASE_URL": self.mailgun.base_url,
            "MAILGUN_VALIDATE_MAPPER_API_KEY": MAILGUN_KEY,
            "MAILGUN_VALIDATE_MAPPER_VALIDATION_CACHE": str(self.directory / "validations.sqlite"),
            "MAILGUN_HEALTH_BASE_URL": self.mailgun.base_url,
            "MAILGUN_HEALTH_API_KEY": MAILGUN_KEY,
            "MAILGUN_HEALTH_UNTIL": f"{self.clock.now:%Y-%m-%d}",
            "MAILGUN_HEALTH_OUTPUT": str(self.directory / "mailgun-health.html"),
        }

    def violations(self) -> list[str]:
        """Requests either fake refused as the real API would."""
        return [*self.mailgun.violations, *self.brevo.violations]

    def new_events(self) -> list[dict[str, Any]]:
        """The Mailgun events this start revealed: after where the clock stood before."""
        after = (self.shown_before or self.clock.start).timestamp()
        events = self.mailgun.events.values()
        return [event for listing in events for event in listing if event["timestamp"] > after]


# --- the summary ------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    body = [["" if v is None else str(v) for v in row] for row in rows]
    if not body:
        body = [["(none)", *[""] * (len(headers) - 1)]]
    cells = [[str(h) for h in headers], *body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def summarize(
    state: dict[str, Any], before: dict[str, Any] | None = None, *, sample: int = 12
) -> str:
    """What Brevo holds, for people: contacts with MG_ attributes, lists, blocklist, events.

    `before` (an earlier state) adds what this run changed.
    """
    contacts: dict[str, dict[str, Any]] = state["contacts"]
    old_contacts = (before or {}).get("contacts", {})
    old_events = len((before or {}).get("events", []))

    def delta(now: int, then: int) -> str:
        return f"{now} (+{now - then} this run)" if before is not None else str(now)

    mg_names = Counter(
        name for c in contacts.values() for name in c["attributes"] if name.startswith("MG_")
    )
    columns = [name for name, _ in mg_names.most_common(7)]
    with_mg = [c for c in contacts.values() if any(n.startswith("MG_") for n in c["attributes"])]
    blocked = sum(1 for c in contacts.values() if c["emailBlacklisted"])
    old_blocked = sum(1 for c in old_contacts.values() if c["emailBlacklisted"])
    lines = [
        "Brevo now holds",
        "",
        table(
            ["what", "count"],
            [
                ["contacts", delta(len(contacts), len(old_contacts))],
                ["contacts with MG_ attributes", len(with_mg)],
                ["blocklisted contacts", delta(blocked, old_blocked)],
                ["events", delta(len(state["events"]), old_events)],
            ],
        ),
        "",
        table(
            ["list id", "list", "members"],
            [
                [
                    list_id,
                    lst["name"],
                    sum(1 for c in contacts.values() if int(list_id) in c["listIds"]),
                ]
                for list_id, lst in sorted(state["lists"].items(), key=lambda kv: int(kv[0]))
            ],
        ),
        "",
        table(
            ["event name", "count"],
            sorted(Counter(e.get("event_name", "?") for e in state["events"]).items()),
        ),
    ]
    if with_mg:
        shown = sorted(with_mg, key=lambda c: c["email"])[:sample]
        lines += [
            "",
            f"Contacts with MG_ attributes (first {len(shown)} of {len(with_mg)}):",
            table(
                ["email", "blocklisted", "lists", *columns],
                [
                    [
                        c["email"],
                        "yes" if c["emailBlacklisted"] else "",
                        ",".join(str(i) for i in c["listIds"]),
                        *[c["attributes"].get(name) for name in columns],
                    ]
                    for c in shown
                ],
            ),
        ]
    return "\n".join(lines)


# Why a Mailgun event kind becomes no Brevo event (target_brevo.rules.event_name_key decides).
NOT_SENT_WHY = {
    "accepted": "Mailgun took the message in",
    "stored": "Mailgun stored a message",
    "rejected": "Mailgun refused to send it",
}


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


def _span(delta: timedelta) -> str:
    if delta == DAY:
        return "a whole day"
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 24 else f"{hours:g} hours"


def what_happened(
    clock: Clock,
    shown_before: datetime | None,
    mailgun_events: Sequence[dict[str, Any]],
    brevo_before: dict[str, Any],
    brevo_after: dict[str, Any],
) -> str:
    """This run in plain words: the simulated time, why N Mailgun events became M Brevo events,
    and what the contacts and the "Mailgun contacts" list are."""
    if shown_before is None:
        time = (
            f"this first run shows the first {_span(clock.now - clock.start)} of the "
            f"simulated world, {clock.start:%Y-%m-%d} to {clock.now:%Y-%m-%d %H:%M} UTC"
        )
    elif clock.now == shown_before:
        time = (
            f"none passed: all {WINDOW_DAYS} simulated days are shown already; "
            "`.venv/bin/python -m fakes.sandbox reset` starts a new world"
        )
    else:
        time = (
            f"{_span(clock.now - shown_before)} passed since the last run, "
            f"{shown_before:%Y-%m-%d %H:%M} to {clock.now:%Y-%m-%d %H:%M} UTC"
        )
    left = (clock.end - clock.now) // DAY
    sent: Counter[str] = Counter()
    not_sent: Counter[str] = Counter()
    for event in mailgun_events:
        key = event_name_key(event["event"], event.get("severity"), event.get("reason"))
        if key is None:
            not_sent[event["event"]] += 1
        else:
            sent[DEFAULT_EVENT_NAMES[key]] += 1
    got = len(brevo_after["events"]) - len(brevo_before["events"])
    lines = [
        "What this run did",
        f"- Simulated time: {time} ({left} more runs bring a new day each).",
        f"- Mailgun: {len(mailgun_events)} new events in that time"
        + (
            f" ({_counts(Counter(e['event'] for e in mailgun_events))})." if mailgun_events else "."
        ),
        f"- Brevo events: {sum(sent.values())} of them are sent to Brevo as events"
        + (f" ({_counts(sent)})" if sent else "")
        + f"; Brevo got {got}"
        + ("." if got == sum(sent.values()) else ": see rows_skipped in the target's summary."),
    ]
    if not_sent:
        why = "; ".join(
            f"{kind}: {NOT_SENT_WHY.get(kind, 'no Brevo counterpart')}" for kind in not_sent
        )
        lines.append(
            f"  The other {sum(not_sent.values())} ({_counts(not_sent)}) are not sent: Brevo's "
            f"events API has no such event ({why}); they still count for their recipient's "
            "contact."
        )
    all_list = next(
        (lst for lst in brevo_after["lists"].values() if lst["name"] == DEFAULT_ALL_LIST_NAME),
        None,
    )
    where = f" (list {all_list['id']})" if all_list else ""
    lines.append(
        "- Contacts: every address Mailgun mentions (event recipients, mailing-list members) "
        f'is a Brevo contact with MG_ attributes. "{DEFAULT_ALL_LIST_NAME}"{where} is the list '
        "target-brevo imports every one of them into; it makes it on its first run unless the "
        "lists.all setting names another. Lists 1-3 hold the engaged, bounced and complained "
        "contacts (the lists setting in meltano.yml)."
    )
    return "\n".join(lines)


def fetch_state(brevo_url: str) -> dict[str, Any]:
    """GET /_fake/state of a running fake Brevo."""
    with urllib.request.urlopen(f"{brevo_url}/_fake/state", timeout=30) as response:  # noqa: S310 - loopback URL
        state: dict[str, Any] = json.load(response)
        return state


# --- commands ---------------------------------------------------------------------------------
def run_meltano(
    meltano: Path, args: Sequence[str], env: dict[str, str], log: Path
) -> subprocess.CompletedProcess[bytes]:
    """Run Meltano from the project root with `env` added; its output goes to `log`."""
    full_env = {**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", **env}
    with log.open("wb") as out:
        return subprocess.run(
            [str(meltano), *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def _require_meltano(meltano: Path) -> None:
    if not meltano.exists():
        raise SystemExit(f"{meltano} not found: run `make demo` (it installs Meltano) first")


def demo(meltano: Path, directory: Path, ports: tuple[int, int], size: tuple[int, int]) -> int:
    """One sandbox run: advance the clock, run the job through Meltano, print the summary."""
    _require_meltano(meltano)
    with Sandbox(
        directory,
        mailgun_port=ports[0],
        brevo_port=ports[1],
        advance=True,
        messages_per_day=size[0],
        recipients=size[1],
    ) as sandbox:
        before = sandbox.brevo.state()
        for note in sandbox.notes:
            print(note)
        print(
            f"Sandbox: fake Mailgun {sandbox.mailgun.base_url} holds "
            f"{sandbox.loaded.get('events', 0)} events of {len(DEFAULT_DOMAINS)} domains "
            f"from {sandbox.clock.start:%Y-%m-%d} to {sandbox.clock.now:%Y-%m-%d %H:%M} UTC "
            f"(simulated time); fake Brevo {sandbox.brevo.base_url}."
        )
        print("Running: meltano --environment=sandbox run tap-mailgun target-brevo ...", flush=True)
        log = directory / "last-run.log"
        args = ["--environment=sandbox", "run", "tap-mailgun", "target-brevo"]
        result = run_meltano(meltano, args, sandbox.env(), log)
        if result.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-25:]
            print("\n".join(tail), file=sys.stderr)
            print(f"\nThe run failed (exit {result.returncode}); full log: {log}", file=sys.stderr)
            return result.returncode
        print(f"Done (log: {log}).\n")
        after = fetch_state(sandbox.brevo.base_url)
        events = sandbox.new_events()
        print(what_happened(sandbox.clock, sandbox.shown_before, events, before, after))
        print()
        print(summarize(after, before))
        health_report(meltano, sandbox)
        problems = sandbox.violations()
    if problems:
        print("\nRequests the real APIs would refuse:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def health_report(meltano: Path, sandbox: Sandbox) -> None:
    """`meltano invoke mailgun-health` on the sandbox: its verdicts and the report's path."""
    print("\nDomain health (meltano --environment=sandbox invoke mailgun-health):", flush=True)
    args = ["--environment=sandbox", "invoke", "mailgun-health"]
    env = {**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", **sandbox.env()}
    with (sandbox.directory / "health.log").open("wb") as log:
        result = subprocess.run(
            [str(meltano), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log
        )
    print(result.stdout.decode(errors="replace").rstrip())
    print(f"(exit {result.returncode}: 0 healthy, 1 a threshold crossed, 2 could not read)")


def serve(directory: Path, ports: tuple[int, int]) -> int:
    """Serve both fakes until Ctrl-C or SIGTERM; Brevo's state is saved on the way out."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with Sandbox(directory, mailgun_port=ports[0], brevo_port=ports[1]) as sandbox:
        for note in sandbox.notes:
            print(note, "meltano.yml points at the usual ports: export the variables below.")
        print(f"fake Mailgun: {sandbox.mailgun.base_url} ({sandbox.loaded})")
        print(f"fake Brevo:   {sandbox.brevo.base_url}/v3")
        print(f"Brevo state:  {sandbox.brevo.base_url}/_fake/state")
        print("In another shell, from the project root:")
        for name, value in sandbox.env().items():
            print(f"  export {name}={shlex.quote(value)}")
        print("  .venv-meltano/bin/meltano --environment=sandbox run tap-mailgun target-brevo")
        print(
            "  .venv/bin/python -m fakes.sandbox summary --brevo-url",
            sandbox.brevo.base_url,
        )
        print("Ctrl-C stops the sandbox.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    return 0


def reset(meltano: Path, directory: Path) -> int:
    """Forget the sandbox: its data folder and the Meltano state of the sandbox environment."""
    # SQLite in WAL mode keeps committed pages in -wal until a checkpoint: a -wal left behind
    # would replay into the next, fresh engagement.sqlite.
    store = ("engagement.sqlite", "engagement.sqlite-wal", "engagement.sqlite-shm")
    extras = ("validations.sqlite", "mailgun-health.html", "health.log")
    for name in ("clock.json", "brevo.json", *store, *extras, "last-run.log"):
        (directory / name).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)  # a fresh clone has none yet: reset.log goes there
    if meltano.exists():
        run_meltano(
            meltano,
            ["--environment=sandbox", "state", "clear", "--force", STATE_ID],
            {},
            directory / "reset.log",
        )
    print(f"Sandbox reset: {directory} emptied, Meltano state {STATE_ID} cleared.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module's docstring."""
    parser = argparse.ArgumentParser(prog="python -m fakes.sandbox", description=__doc__)
    parser.add_argument("command", choices=["demo", "serve", "summary", "reset"])
    parser.add_argument(
        "--dir", type=Path, default=SANDBOX_DIR, help="where the sandbox keeps data"
    )
    parser.add_argument("--meltano", type=Path, default=MELTANO, help="the meltano executable")
    parser.add_argument(
        "--mailgun-port",
        type=int,
        default=MAILGUN_PORT,
        help="0: any free port; a taken one is replaced by a free one (passed on to Meltano)",
    )
    parser.add_argument("--brevo-port", type=int, default=BREVO_PORT, help="0: any free port")
    parser.add_argument(
        "--brevo-url", default=f"http://127.0.0.1:{BREVO_PORT}", help="for `summary`"
    )
    parser.add_argument(
        "--messages-per-day",
        type=int,
        default=MESSAGES_PER_DAY,
        help="size of a new sandbox (an existing one keeps its own)",
    )
    parser.add_argument("--recipients", type=int, default=RECIPIENTS, help="size of a new sandbox")
    args = parser.parse_args(argv)
    ports = (args.mailgun_port, args.brevo_port)
    try:
        if args.command == "demo":
            return demo(args.meltano, args.dir, ports, (args.messages_per_day, args.recipients))
        if args.command == "serve":
            return serve(args.dir, ports)
    except SandboxInUse as busy:
        raise SystemExit(str(busy)) from None
    if args.command == "summary":
        try:
            print(summarize(fetch_state(args.brevo_url)))
        except OSError as exc:
            raise SystemExit(
                f"No sandbox answers at {args.brevo_url} ({exc}): start one with `make sandbox`."
            ) from None
        return 0
    return reset(args.meltano, args.dir)


if __name__ == "__main__":
    sys.exit(main())
