"""target-brevo: applies Mailgun engagement, suppressions and events to Brevo, in batches."""

from __future__ import annotations

import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, ClassVar

import click
import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.exceptions import (
    ConfigValidationError,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.exceptions import InvalidInputLine
from typing_extensions import override

from plugin_cli import CheckedConfigFiles, SettingError, check_base_url, error_line
from target_brevo import rules
from target_brevo.client import EVENTS_BUCKET, BrevoClient, BrevoError
from target_brevo.publisher import Publisher
from target_brevo.sdk_compat import SignalAwareTarget
from target_brevo.settings import CONFIG_SCHEMA, DEFAULT_BASE_URL, Settings, SettingsError
from target_brevo.sinks import sink_class
from target_brevo.store import LOCK_LEASE_SECONDS, EngagementStore, RunLockedError, store_url
from target_brevo.summary import WARNINGS_PER_REASON, Summary

if TYPE_CHECKING:
    from singer_sdk.sinks import BatchSink


# How long (before the newest event) an applied event's identity is kept to recognise a
# replay: longer than Mailgun's longest event retention (30 days), so nothing the tap can
# still send is forgotten.
EVENT_MEMORY_DAYS = 45
RULES_FINGERPRINT = "contact_rules_fingerprint"
RULES_VERSION_KEY = "rules_version"
# How often, while reading, the target looks whether Brevo's pace lets an events batch go: a
# fraction of Brevo's 100 ms per call (10 a second), so the budget never idles long.
MEANWHILE_SECONDS = 0.02


class FastLaneSkipped(Exception):
    """The fast lane found the store held by another run: this run ends at once, exit 0."""


class Terminated(BaseException):
    """A termination signal arrived while the target was writing to Brevo or the store.

    A BaseException, like KeyboardInterrupt, so that nothing on the way out mistakes it for an
    error to handle and carries on: it unwinds the flush, nothing after it commits, and
    `TargetBrevo.invoke` rolls the store back and exits 128 + the signal number.
    """

    def __init__(self, signum: int, target: TargetBrevo) -> None:
        super().__init__(signum)
        self.signum = signum
        self.target = target


# What a tap's output can get wrong about the Singer protocol, besides a malformed line: the
# SDK raises these from its message handlers. Each keeps its class (the SDK's standard tests
# expect it), with the line number put in front of its message.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
)


class LineNumberReader(MsgSpecReader):
    """msgspec Singer reader that names the line number of a malformed message."""

    _decode = msgspec.json.Decoder().decode  # floats stay floats (the SDK's default is Decimal)

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.on_invalid_line: Callable[[Exception], None] | None = None

    @override
    def process_lines(
        self, file_input: IO[str] | None, callbacks: dict[str, Callable[[dict[str, Any]], None]]
    ) -> Counter[str]:
        """Process every line; on a bad one, let the target keep what came before."""
        try:
            return super().process_lines(file_input, callbacks)
        except INPUT_ERRORS as exc:
            error = exc
            if not str(exc).startswith("input line"):
                said = " ".join(str(exc).split())  # one line: some SDK messages hold newlines
                error = type(exc)(f"input line {self.line_number}: {said}")
            if self.on_invalid_line is not None:
                self.on_invalid_line(error)
            raise error from None

    @override
    def deserialize_json(self, line: str) -> dict[str, Any]:
        """Parse one line; a line that is not a Singer message is reported with its number."""
        self.line_number += 1
        try:
            message = self._decode(line)
        except msgspec.DecodeError as exc:
            raise InvalidInputLine(
                f"input line {self.line_number} is not valid JSON ({exc}); "
                "fix or drop that line of the tap's output and rerun"
            ) from None
        if not isinstance(message, dict) or "type" not in message:
            raise InvalidInputLine(
                f"input line {self.line_number} is not a Singer message (no 'type'); "
                "fix or drop that line of the tap's output and rerun"
            )
        return message


class TargetBrevo(CheckedConfigFiles, SignalAwareTarget):
    """Singer target for Brevo: contacts, blocklist, lists and events from Mailgun activity."""

    # One line above: --about prints it as the description. Building a target takes nothing:
    # the run starts at its first write (`writing`), which takes the store's run lock and
    # applies changed contact settings, and only the command line (`invoke`) tunes the GC.

    # The docstring above is --about's description: one line, as the SDK's Markdown needs.
    name = "target-brevo"
    # --version reads the version of this distribution (it ships all three plugins).
    package_name = "mailgun-brevo-singer"
    config_jsonschema = CONFIG_SCHEMA
    message_reader_class = LineNumberReader
    _running: ClassVar[TargetBrevo | None] = None  # the CLI's target, closed however it ends

    def __init__(self, *args: Any, check_only: bool = False, **kwargs: Any) -> None:
        """The SDK's target with its store, client and publisher; `check_only`: the client only."""
        # Set before the SDK installs its signal handlers: they may run from then on.
        self._busy = 0
        self._ready = False
        self._started = False
        self._closed = False
        self._next_meanwhile = 0.0
        super().__init__(*args, **kwargs)
        # One sink drains at a time: the store is one connection and Brevo one rate budget.
        self.max_parallelism = 1
        self.settings = Settings.from_config(self.config)
        invalid = self.settings.invalid_event_names()
        if invalid:
            raise SettingsError(
                f"event_names: Brevo accepts only 1-255 of A-Z a-z 0-9 _ - in an event name; "
                f"fix {', '.join(invalid)}"
            )
        base_url = self.config.get("base_url") or DEFAULT_BASE_URL
        check_base_url("base_url", base_url, DEFAULT_BASE_URL)
        for name in self.settings.unknown_names():
            self.logger.warning("Setting %s names nothing target-brevo writes; ignored", name)
        self.client = BrevoClient(
            base_url,
            self.config["api_key"],
            dry_run=self.settings.dry_run,
            logger=self.logger,
        )
        if check_only:  # --test: Brevo and the key only; no store, no lock
            return
        self.summary = Summary()
        self.store = EngagementStore(
            store_url(self.config.get("engagement_store")),
            dry_run=self.settings.dry_run,
            lease_seconds=float(self.config.get("run_lock_lease_seconds") or LOCK_LEASE_SECONDS),
        )
        TargetBrevo._running = self
        self.publisher = Publisher(
            self.client, self.store, self.settings, self.summary, self.logger
        )
        self._ready = True
        if isinstance(self.message_reader, LineNumberReader):
            self.message_reader.on_invalid_line = self.keep_what_came_before

    def _rewrite_contacts_if_rules_changed(self) -> None:
        """Settings that shape contacts changed: every contact Brevo has is rewritten once."""
        fingerprint = self.settings.contact_rules_fingerprint()
        before = self.store.get_meta(RULES_FINGERPRINT)
        if before == fingerprint:
            return
        version = self.store.get_meta(RULES_VERSION_KEY)
        if before is not None and version is None:  # written under rules version 1
            corrected = self.store.correct_rules_v1(
                dict(self.settings.event_names) if self.settings.event_names else None
            )
            self.logger.info(
                "the store was written under rules version 1 (suppress-unsubscribe and "
                "suppress-complaint failures counted as hard bounces): %d contacts corrected",
                corrected,
            )
        self.store.set_meta(RULES_VERSION_KEY, str(rules.RULES_VERSION))
        count = self.store.mark_all_dirty()
        if count:
            self.logger.info(
                "lists, field_mapping or blocklist_on %s since the contacts were written: "
                "all %d contacts are written again in this run",
                "changed" if before is not None else "may have changed",
                count,
            )
        self.store.set_meta(RULES_FINGERPRINT, fingerprint)
        self.store.commit()

    @override
    def get_sink_class(self, stream_name: str) -> type[BatchSink]:
        """The sink that writes this stream (any other stream is accepted and skipped)."""
        return sink_class(stream_name)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A stretch of writing to the store or Brevo, which a termination signal must abort,
        never re-enter. The first one starts the run (`start_run`).
        """
        self._busy += 1
        try:
            if not self._started:
                self.start_run()
            yield
        finally:
            self._busy -= 1

    def meanwhile(self) -> None:
        """Between two records or two parts of a batch's writing, once the run started, at
        most every MEANWHILE_SECONDS: send the stored events Brevo's pace allows now
        (`Publisher.send_ready_events`), and make the run's preparation calls its contacts
        budget allows now (`Publisher.prepare_ready`), so that the flush waits for neither."""
        if not self._started:
            return
        now = time.monotonic()
        if now < self._next_meanwhile:
            return
        self._next_meanwhile = now + MEANWHILE_SECONDS
        with self.writing():
            self.publisher.send_ready_events()
            self.publisher.prepare_ready()

    def brevo_bound(self) -> bool:
        """Whether the run now waits for Brevo: its events bucket is used up for this window
        (`SinkHost.brevo_bound`; never before the run's first answer from Brevo)."""
        return not self.client.ready(EVENTS_BUCKET)

    def start_run(self) -> None:
        """Take the store for this run, then rewrite every contact if the rules changed.

        Done just before the first write rather than when the target is built, so that nothing
        is held by a target that never runs, and two targets in one process are two runs.
        """
        if not self.settings.dry_run:  # a dry run writes nothing: it needs no lock
            self._lock_store()
        converted = self.store.use_millisecond_identities()
        if converted:
            self.logger.info(
                "%d stored event identities converted to the millisecond (the precision "
                "common to webhooks, the Events API and the Logs API)",
                converted,
            )
        self.store.commit()
        self._rewrite_contacts_if_rules_changed()
        self._started = True

    def _lock_store(self) -> None:
        """Take the store's run lock, waiting up to run_lock_wait_seconds for another run.

        The fast lane that still finds it held skips its run (`FastLaneSkipped`): nothing is
        written yet, and no STATE will be, so its next run reads the same events again.
        """
        wait = self.settings.lock_wait_seconds

        def waiting() -> None:
            self.logger.info(
                "Another target-brevo run holds the engagement store: waiting up to %g s for it "
                "(run_lock_wait_seconds)",
                wait,
            )

        try:
            waited = self.store.lock_run(wait, on_wait=waiting)
        except RunLockedError as exc:
            if not self.settings.fast_lane:
                raise
            raise FastLaneSkipped(
                f"fast lane skipped: another target-brevo run still holds the engagement store "
                f"after {wait:g} s of waiting (run_lock_wait_seconds); nothing written, no STATE "
                "emitted: the next run reads the same events again"
            ) from exc
        if waited:
            self.logger.info("Took the engagement store after waiting %.0f s for it", waited)

    @override
    def on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: mid-write, abort and roll back; otherwise write what was read."""
        if self._busy or not self._ready:
            self.logger.error(
                "Received signal %d while writing to Brevo or the engagement store: rolling "
                "back and stopping without emitting STATE (exit %d); rerun to finish, nothing "
                "the tap sent since the last STATE is lost",
                signum,
                128 + signum,
            )
            raise Terminated(signum, self)
        if self._closed:  # the run had already finished: nothing left to write
            sys.exit(0)
        self.logger.info(
            "Received signal %d between two writes: writing what was read, then stopping", signum
        )
        with self.writing():  # a second signal during this drain aborts it, never re-enters
            self.drain_all(is_endofpipe=True)
            self._finish()
        sys.exit(0)

    @override
    def on_new_state(self) -> None:
        """In the fast lane, apply everything read so far at each new STATE: a tap following
        the webhook spool sends one after each batch, and the event must not wait for the end
        of the run. The drain ends by emitting that STATE (`before_state` flushes Brevo first).
        """
        if self.settings.fast_lane:
            self.drain_all()

    @override
    def before_state(self) -> bool:
        """Bring Brevo up to date first: state is emitted only once Brevo has what it covers."""
        with self.writing():
            self.publisher.flush()
        if self.settings.dry_run:
            self.logger.info("dry-run: state not emitted, so a real run starts from the same place")
            return False
        return True

    @override
    def process_endofpipe(self) -> None:
        """After the last line: drain, flush, log the summary, release the store."""
        super().process_endofpipe()
        self._finish()

    def keep_what_came_before(self, error: Exception) -> None:
        """A bad input line: write what came before it and emit its state; the error stands."""
        self.logger.error("%s", error)
        self.drain_all(is_endofpipe=True)
        self._finish()

    @override
    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command line, plus --test (what `meltano test` runs)."""
        command = super().get_singer_command()
        command.params.append(
            click.Option(
                ["--test"],
                is_flag=True,
                help="Check that Brevo accepts the API key (GET /account), then exit.",
            )
        )
        return command

    @classmethod
    def check_connection(cls, config: Any) -> None:
        """--test: read the key's account from Brevo; BrevoError when it is refused.

        `config` is the SDK's parsed --config option (files and/or ENV), None without one.
        """
        target = cls(
            config=config.config if config else None,
            parse_env_config=bool(config and config.parse_env),
            check_only=True,
        )
        account = target.client.account()
        target.logger.info(
            "Brevo accepts the API key at %s: account of %s",
            target.client.base_url,
            account.get("companyName") or account.get("email"),
        )

    @override
    @classmethod
    def invoke(cls, *, test: bool = False, **kwargs: Any) -> None:
        """The CLI: errors end the run with their message, no traceback.

        Code 0 also when the fast lane skips its run (one info line);
        code 1: a setting or Brevo refused something (the message says what to check);
        code 2: a bad input line (malformed, or against the Singer protocol);
        128 + N: signal N arrived mid-write (rolled back, no STATE).
        """
        # Records are short-lived and acyclic: the default young-generation threshold makes the
        # cyclic GC rescan every live batch hundreds of times (a third of the run's CPU). Only
        # here: a process that merely builds a target (tests, an embedding app) keeps its GC.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        try:
            if test and not kwargs.get("about"):
                cls.check_connection(kwargs.get("config"))
                return
            super().invoke(**kwargs)
        except FastLaneSkipped as skipped:
            cls._close_running()
            cls.logger.info("%s", skipped)
            _discard(kwargs.get("file_input") or sys.stdin)  # the tap must not fail on a pipe
        except (BrevoError, SettingError, RunLockedError, ConfigValidationError) as exc:
            cls._close_running()
            cls.logger.debug("Stopped on this error:", exc_info=True)
            cls.logger.error("%s", error_line(exc))
            raise SystemExit(1) from None
        except INPUT_ERRORS:
            cls._close_running()
            raise SystemExit(2) from None  # already logged, with its line number
        except Terminated as stop:
            cls._close_running()  # rolls back whatever the interrupted write left
            raise SystemExit(128 + stop.signum) from None

    @classmethod
    def _close_running(cls) -> None:
        """Roll back and release the store (and its run lock) of a run that stops on an error."""
        running, cls._running = cls._running, None
        if running is not None:
            try:
                running.close()
            except Exception:  # the error being reported matters more than this one
                running.logger.debug("Could not close the engagement store", exc_info=True)

    def _finish(self) -> None:
        if self._closed:
            return
        with self.writing():
            self.publisher.flush()
            forgotten = self.store.forget_old_events(EVENT_MEMORY_DAYS)
            self.store.commit()
            self.summary.imports_unconfirmed = len(self.store.unconfirmed_imports())
        self.logger.debug(
            "Forgot %d event identities of over %d days", forgotten, EVENT_MEMORY_DAYS
        )
        summary = self.summary.as_dict(
            self.client.stats.calls, self.client.stats.retries, self.settings.dry_run
        )
        if any(n > WARNINGS_PER_REASON for n in self.summary.skipped.values()):
            self.logger.warning("Skips beyond %d per reason were only counted", WARNINGS_PER_REASON)
        self.logger.info("target-brevo summary: %s", json.dumps(summary, sort_keys=True))
        self.close()

    def close(self) -> None:
        """Roll back anything uncommitted, release the store and its run lock (if taken)."""
        if not self._closed:
            self._closed = True
            self.store.close()


def _discard(source: IO[str]) -> None:
    """Read the rest of the input and drop it, so the tap writing it ends normally."""
    while source.read(1 << 16):
        pass


if __name__ == "__main__":
    TargetBrevo.cli()
