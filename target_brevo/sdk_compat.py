"""Every private singer-sdk hook target-brevo overrides, in one place, as public hooks.

singer-sdk (pinned `~=0.54.9`) has no public way to do these; each override here replaces a
private method, and `tests/target/test_sdk_compat.py` pins the SDK source of each method it
replaces or relies on (a hash of `inspect.getsource`): when the pin moves and one of them
changes, that test names it and what to re-check here. Nothing else in target_brevo overrides
an SDK name that starts with an underscore (the same test checks).

- `Target._handle_termination` (installed by `PluginBase._setup_signal_handlers` for SIGINT and
  SIGTERM) drains every sink, which would re-enter a flush already under way: half a batch
  could be committed, and covered by a STATE, with exit code 0. It becomes `on_signal`.
- `Target._write_state_message` writes STATE after each drain of all sinks (`drain_all`): the
  target must first bring Brevo up to date, and in a dry run not emit it. It asks
  `before_state` first.
- `Target._process_state_message` keeps the latest STATE for the next drain; in the fast lane
  the target must apply what came before it at once. It calls `on_new_state` when it changed.
- `Sink._parse_timestamps_in_record` parses every date-time field into a datetime, a large
  share of the per-record cost; the rules read the one timestamp they need and canonicalise
  it themselves, so it does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk import Target
from singer_sdk.sinks import BatchSink
from typing_extensions import override

if TYPE_CHECKING:
    from types import FrameType


class SignalAwareTarget(Target):
    """singer-sdk's Target, with its signal handler and STATE writer as public hooks."""

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: `on_signal` decides (instead of the SDK's drain-everything)."""
        self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        """Handle SIGINT/SIGTERM; by default as the SDK does (drain every sink, exit 0)."""
        super()._handle_termination(signum, None)

    @override
    def _write_state_message(self, state: dict[str, Any]) -> None:
        """Emit STATE (after a drain of all sinks) only if `before_state` agrees."""
        if self.before_state():
            super()._write_state_message(state)

    def before_state(self) -> bool:
        """Called before each STATE is written; False: it is not written."""
        return True

    @override
    def _process_state_message(self, message_dict: dict[str, Any]) -> None:
        """The SDK's, then `on_new_state` if the STATE is not the one already kept."""
        before = self._latest_state
        super()._process_state_message(message_dict)
        if self._latest_state != before:
            self.on_new_state()

    def on_new_state(self) -> None:
        """Called when the tap sent a new STATE; by default nothing (the SDK's way)."""


class RawTimestampSink(BatchSink):
    """singer-sdk's BatchSink, leaving every timestamp as the tap wrote it."""

    @override
    def _parse_timestamps_in_record(
        self, record: dict[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        """Leave timestamps as they are: the rules canonicalise the one they read."""
