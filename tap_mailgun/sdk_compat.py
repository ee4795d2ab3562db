"""Every use the tap makes of singer-sdk beyond its public hooks, in one place.

The tap is pinned to singer-sdk~=0.54.9. What it copies, calls or relies on below the SDK's
public contract is here, and `SDK_SOURCES` lists each SDK function it depends on with the
hash of the source this module was written against: tests/tap/test_sdk_compat.py fails when
a source differs, naming what to re-check. Nothing else in tap_mailgun imports a private
SDK name.

- `SkipMaskWhenAllSelected`: `Stream._generate_record_messages` without the selection-mask
  walk when the catalog deselects nothing.
- `MessageWriter`: the msgspec writer, flushing only after messages other than RECORD.
- `about_info`: `PluginBase._get_about_info`, which `TapMailgun.print_about` extends.
- `send_with_retries`: `RESTStream._request` under the stream's `request_decorator`, for a
  request outside the stream's paging (the domains' details).
- `progress_markers` / `drop_progress_markers`: the state key the SDK promotes to a bookmark
  when a partition completes; the streams cap it or drop it.
- `IndexedPartitionState`: the SDK's state manager, finding a partition's state through a
  dict instead of scanning every partition on each lookup (quadratic over a sync).
- `prime_starting_values`: `Stream._write_starting_replication_value` for partitions read
  ahead by worker threads, before the SDK starts them.
- `StateOfRecordPartition`: `Stream._increment_stream_state` on the partition a record
  belongs to, for a stream whose one query serves every partition (events from the Logs API).
- `write_state_now`: `Stream._write_state_message`, STATE mid-stream, for the webhook_events
  stream following its spool (the SDK writes it only every 10,000 records and at the end).
- `OneLineSyncErrors`: `Stream.sync` logs "An unhandled error occurred while syncing" before
  re-raising; for an error that ends the run in one line, that line goes to the debug log.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import RESTStream, Stream
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.helpers._state import PROGRESS_MARKERS
from singer_sdk.helpers._typing import conform_record_data_types
from singer_sdk.helpers._util import utc_now
from singer_sdk.singerlib import RecordMessage
from singer_sdk.singerlib.encoding.base import SingerMessageType
from singer_sdk.streams._state import StreamStateManager
from typing_extensions import override

if TYPE_CHECKING:
    import requests
    from singer_sdk import Tap
    from singer_sdk.about import AboutInfo
    from singer_sdk.helpers.types import Context, Record
    from singer_sdk.singerlib.encoding.simple import Message


@dataclass(frozen=True)
class SdkSource:
    """An SDK function the tap depends on: where it is, its source's hash, what to re-check."""

    module: str
    qualname: str
    sha256: str  # the first 16 hex digits of sha256(inspect.getsource(...))
    recheck: str

    def current_hash(self) -> str:
        """The hash of the installed SDK's source of this function."""
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        return source_hash(target)


def source_hash(function: Any) -> str:
    """The first 16 hex digits of the sha256 of `function`'s source."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


SDK_SOURCES: tuple[SdkSource, ...] = (
    SdkSource(
        "singer_sdk.streams.core",
        "Stream._generate_record_messages",
        "9b5f9fbcdedb7a1a",
        "SkipMaskWhenAllSelected copies it minus pop_deselected_record_properties: "
        "port what changed into the copy.",
    ),
    SdkSource(
        "singer_sdk.contrib.msgspec",
        "MsgSpecWriter.write_message",
        "ede93288e1304d20",
        "sdk_compat.MessageWriter.write_message copies it, flushing only after non-RECORD "
        "messages: port what changed.",
    ),
    SdkSource(
        "singer_sdk.plugin_base",
        "PluginBase._get_about_info",
        "671be75febc8ed6b",
        "sdk_compat.about_info calls it for TapMailgun.print_about: check it still returns "
        "the AboutInfo the JSON formatter takes.",
    ),
    SdkSource(
        "singer_sdk.plugin_base",
        "PluginBase.print_about",
        "b7e9b2ce3be8f596",
        "TapMailgun.print_about replaces it for --about --format=json (adding the streams): "
        "carry over what changed.",
    ),
    SdkSource(
        "singer_sdk.helpers._state",
        "finalize_state_progress_markers",
        "bab6282c32282f40",
        "MailgunStream.request_records drops a failed partition's progress markers and "
        "SuppressionStream.get_records caps them: check the SDK still promotes "
        "state['progress_markers']['replication_key_value'] to the bookmark.",
    ),
    SdkSource(
        "singer_sdk.streams.rest",
        "RESTStream.request_records",
        "54132e0f89b6a9a7",
        "MailgunStream.request_records wraps it and classifies what it raises; "
        "MailgunPaginator relies on an empty page ending its loop: check both.",
    ),
    SdkSource(
        "singer_sdk.streams.rest",
        "RESTStream.request_decorator",
        "874876c6f423d34f",
        "MailgunStream.request_decorator wraps the request it retries and raises a "
        "MailgunRunError for a failure no retry can mend: check the SDK still retries only "
        "the exceptions it lists (never a FatalAPIError) and still retries a cut answer "
        "(ChunkedEncodingError) and a dropped connection.",
    ),
    SdkSource(
        "singer_sdk.streams.rest",
        "RESTStream.get_http_request",
        "4e38d56cddc16d7b",
        "MailgunStream.get_http_request replaces the URL of what it returns with the next "
        "link: check the request is still built there.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream.get_starting_replication_key_value",
        "2d3689c4c34bc51f",
        "WebhookEventsStream replaces it (the bookmark is a spool sequence, not a time): "
        "check what else it now does.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream.compare_start_date",
        "c6afffa35fbb142b",
        "WebhookEventsStream replaces it (start_date means nothing for a sequence): "
        "check what else it now does.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream._increment_stream_state",
        "cabc0edb2fd4f000",
        "StateOfRecordPartition calls it with the record's own partition as `context`: check "
        "it still advances exactly that partition's bookmark (and Stream._sync_records still "
        "calls it once per emitted record).",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream._write_state_message",
        "f82ecd8d16986823",
        "sdk_compat.write_state_now calls it mid-stream: check it still writes the tap's state "
        "once per change (nothing when nothing changed).",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream._sync_records",
        "8928dc7f50e9bf57",
        "write_state_now relies on it counting each record into the bookmark before asking "
        "get_records for the next one: check it still does.",
    ),
    SdkSource(
        "singer_sdk.streams.rest",
        "RESTStream._request",
        "be6df60d23d63d96",
        "sdk_compat.send_with_retries calls it under request_decorator for the domains' "
        "details: check it still authenticates, sends, and calls validate_response.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream.state_manager.fget",
        "d3b50b3794edd56a",
        "IndexedPartitionState.state_manager copies it with IndexedStateManager: port what "
        "changed into the copy.",
    ),
    SdkSource(
        "singer_sdk.streams._state",
        "StreamStateManager.get_context_state",
        "58cd50f668f347e7",
        "IndexedStateManager.get_context_state replaces its partition lookup: check it still "
        "goes through get_state_partition_context and get_writeable_state_dict.",
    ),
    SdkSource(
        "singer_sdk.helpers._state",
        "get_writeable_state_dict",
        "de2b38d09829d5d4",
        "IndexedStateManager finds and creates partition states as it does (a dict "
        "{'context': ...} appended to stream_state['partitions'], duplicates refused): "
        "check the layout is the same.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream.sync",
        "6b4262dcdddf22b4",
        "OneLineSyncErrors demotes the line it logs through self.log when a sync fails "
        "(SYNC_FAILED): check the message is the same and still goes through Stream.log.",
    ),
    SdkSource(
        "singer_sdk.streams.core",
        "Stream._write_starting_replication_value",
        "0a24e5d05cd5353c",
        "prime_starting_values calls it for partitions read ahead: check it still only "
        "writes the partition's starting value (idempotent, written again when it starts).",
    ),
)


class SkipMaskWhenAllSelected(Stream):
    """A stream mixin: the SDK's record messages, without its mask walk when no property is
    deselected.

    The SDK walks every key of every record against the selection mask to drop deselected
    properties: ~16 % of the tap's CPU (bench/results/profile-tap-100000.txt) spent dropping
    nothing when the catalog deselects nothing. Otherwise the SDK's own method runs.
    """

    @cached_property
    def _nothing_deselected(self) -> bool:
        """Whether the catalog keeps every property of this stream (the usual case)."""
        return all(self.mask.values())

    @override
    def _generate_record_messages(self, record: Record) -> Generator[RecordMessage, None, None]:
        """The SDK's method; when nothing is deselected, the copy below minus the walk."""
        if not self._nothing_deselected:
            yield from super()._generate_record_messages(record)
            return
        record = conform_record_data_types(
            stream_name=self.name,
            record=record,
            schema=self.effective_schema,
            level=self.TYPE_CONFORMANCE_LEVEL,
            logger=self.logger,
        )
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )


class IndexedStateManager(StreamStateManager):
    """The SDK's state manager, finding partition states through a dict.

    The SDK scans every partition's context on each lookup (`_find_in_partitions_list`):
    lookups are made several times per partition, so a sync over N domains costs O(N^2)
    comparisons (a quarter of the tap's CPU at 2,000 domains). The index maps a context's
    items to its state dict in the same `partitions` list; it is rebuilt when that list is
    replaced or changes length behind its back. Thread-safe: workers reading ahead look up
    bookmarks while the main thread writes.
    """

    def __init__(self, **kwargs: Any) -> None:
        """The SDK's manager (same arguments), with an empty index."""
        super().__init__(**kwargs)
        self._index: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        self._indexed: list[dict[str, Any]] | None = None
        self._indexed_length = 0
        self._lock = threading.RLock()

    @override
    def get_context_state(self, context: Context | None) -> dict[str, Any]:
        """The partition's writable state, created when missing, as the SDK's method does."""
        partition = self.get_state_partition_context(context)
        if not partition:
            return super().get_context_state(context)
        key = tuple(sorted(partition.items()))
        try:
            hash(key)
        except TypeError:  # a context value that is no key: the SDK's scan
            return super().get_context_state(context)
        with self._lock:
            partitions: list[dict[str, Any]] = self.stream_state.setdefault("partitions", [])
            stale = partitions is not self._indexed or len(partitions) != self._indexed_length
            if stale and not self._reindex(partitions):
                return super().get_context_state(context)  # refuses duplicates, as ever
            found = self._index.get(key)
            if found is None:
                found = {"context": dict(partition)}
                partitions.append(found)
                self._index[key] = found
                self._indexed_length = len(partitions)
            return found

    def _reindex(self, partitions: list[dict[str, Any]]) -> bool:
        """Index `partitions`; False when two share a context (or one cannot be a key)."""
        index: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        try:
            for state in partitions:
                key = tuple(sorted(state["context"].items()))
                if key in index:
                    return False
                index[key] = state
        except (TypeError, KeyError, AttributeError):
            return False
        self._index, self._indexed, self._indexed_length = index, partitions, len(partitions)
        return True


class IndexedPartitionState(Stream):
    """A stream mixin: the SDK's state manager replaced by IndexedStateManager."""

    @property
    @override
    def state_manager(self) -> StreamStateManager:
        """The SDK's property, building an IndexedStateManager."""
        if self._state_manager is None:
            self._state_manager = IndexedStateManager(
                tap_name=self.tap_name,
                stream_name=self.name,
                tap_state=self._tap_state,
                state_partitioning_keys=self.state_partitioning_keys,
                is_sorted=self.is_sorted,
                check_sorted=self.check_sorted,
            )
        return self._state_manager


def prime_starting_values(stream: Stream, contexts: Iterable[Context]) -> None:
    """Write each partition's starting value (from its bookmark or start_date) as the SDK
    does when it starts the partition, so a worker reading ahead sees the same value."""
    for context in contexts:
        stream._write_starting_replication_value(context)


class StateOfRecordPartition(Stream):
    """A stream mixin: each record advances the bookmark of the partition it belongs to
    (`record_partition`), not the one the SDK is syncing. For a stream that reads every
    partition with one query while the SDK walks its partitions (the first walk reads all)."""

    def record_partition(self, record: Record, context: Context | None) -> Context | None:
        """The partition whose bookmark `record` advances; None: it advances none."""
        return context

    @override
    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        """The SDK's method, on the record's own partition (or on none)."""
        partition = self.record_partition(latest_record, context)
        if partition is not None:
            super()._increment_stream_state(latest_record, context=partition)


class MessageWriter(MsgSpecWriter):
    """The SDK's msgspec writer, flushing stdout after every message except RECORD.

    Flushing each record costs a write system call per record (a third of the tap's time on a
    pipe). Records now leave in full buffers; every STATE message still flushes, with all the
    records before it, so a target never holds a state ahead of the records it covers.
    """

    @override
    def write_message(self, message: Message) -> None:
        """Write one message; flush unless it is a record."""
        sys.stdout.buffer.write(self.format_message(message))
        if message.type != SingerMessageType.RECORD:
            sys.stdout.flush()


def about_info(tap_type: type[Tap]) -> AboutInfo:
    """What the SDK's --about prints for `tap_type`."""
    return tap_type._get_about_info()


def send_with_retries(
    stream: RESTStream[Any], prepared: requests.PreparedRequest
) -> requests.Response:
    """One request outside the stream's paging, with the stream's auth, retries and
    `validate_response`: what the SDK does for each page."""
    response: requests.Response = stream.request_decorator(stream._request)(prepared, None)
    return response


def progress_markers(state: dict[str, Any]) -> dict[str, Any]:
    """A partition's progress markers (empty when there are none), editable in place."""
    markers: dict[str, Any] = state.get(PROGRESS_MARKERS) or {}
    return markers


def drop_progress_markers(state: dict[str, Any]) -> None:
    """Forget a partition's progress, so the SDK does not promote it to the bookmark."""
    state.pop(PROGRESS_MARKERS, None)


def write_state_now(stream: Stream) -> None:
    """Write the tap's STATE now, mid-stream, if it changed since the last one.

    Called from `get_records` between two records, it covers every record yielded so far: the
    SDK counts each into the bookmark before it resumes the generator (`Stream._sync_records`).
    """
    stream._write_state_message()


# What `Stream.sync` logs, at ERROR, before it re-raises the error that stopped a stream.
SYNC_FAILED = "An unhandled error occurred while syncing '%s'"


class OneLineSyncErrors(Stream):
    """A stream whose errors of `one_line_errors` reach the user as the run's one-line error
    only: the SDK's SYNC_FAILED line about them goes to the debug log (about any other error
    it stays an error)."""

    one_line_errors: ClassVar[tuple[type[Exception], ...]] = ()

    @override
    def log(self, message: str, *args: Any, level: int = logging.INFO, **kwargs: Any) -> None:
        """The SDK's log; SYNC_FAILED at debug while one of `one_line_errors` is handled."""
        if message == SYNC_FAILED and isinstance(sys.exc_info()[1], self.one_line_errors):
            level = logging.DEBUG
        super().log(message, *args, level=level, **kwargs)
