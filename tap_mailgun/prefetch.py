"""Reading several domains at a time while the Singer output stays one ordered stream.

The SDK syncs a stream's partitions one after the other, on one thread, and writes each
record and STATE message as it goes: that order is what keeps bookmarks honest. Reading is
what costs (one round trip a page), so `OrderedPrefetch` reads the next partitions' pages in
worker threads while the main thread emits the current one:
- at most `workers` partitions are fetched or held at a time (a partition's slot is freed only
  once the main thread has consumed it), and each holds at most `buffered` items: memory is
  bounded whatever the account's size;
- the main thread takes partitions in order; what a worker raised is raised there, inside
  that partition's iteration, so a failing domain is reported exactly as before and the others
  finish;
- a partition the main thread skips (asks for a later one first) is dropped unread.
Workers know nothing of Singer or the SDK: they run the `fetch` they are given.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# A worker waiting for room (or a slot) checks this often whether the reading was abandoned.
_POLL_SECONDS = 0.1
# How long a stopped read lets the requests in flight end (each is bounded by its timeout
# anyway), so that no worker logs after the run's last word.
STOP_WAIT_SECONDS = 10.0


@dataclass
class _Failed:
    """What a worker's fetch raised, to be raised again on the main thread."""

    error: BaseException


class _Done:
    """The end of a partition's items."""


_DONE = _Done()


class OrderedPrefetch(Generic[K, T]):
    """`fetch(key)` for each of `keys`, `workers` keys at a time; `items(key)`, asked in the
    order of `keys`, yields each key's items in the order its fetch produced them."""

    def __init__(
        self,
        keys: Sequence[K],
        fetch: Callable[[K], Iterable[T]],
        *,
        workers: int,
        buffered: int = 1000,
    ) -> None:
        """Start `workers` threads over `keys` (distinct); each key holds up to `buffered`
        items not yet taken."""
        self._keys = list(keys)
        self._fetch = fetch
        self._queues: dict[K, queue.Queue[T | _Failed | _Done]] = {
            key: queue.Queue(maxsize=buffered) for key in self._keys
        }
        self._slots = threading.Semaphore(workers)
        self._next = 0  # index of the next key a worker takes
        self._taken = 0  # index of the next key the main thread may ask
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"prefetch-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def __contains__(self, key: object) -> bool:
        """Whether `key` is one of this prefetch's keys still to be asked."""
        return key in self._keys[self._taken :]

    def items(self, key: K) -> Iterator[T]:
        """The items of `key`; keys before it that were never asked are dropped."""
        index = self._keys.index(key, self._taken)
        for skipped in self._keys[self._taken : index]:
            self._discard(skipped)
        self._taken = index + 1
        source = self._queues[key]
        try:
            while True:
                item = source.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._discard(key)

    def close(self, *, wait: float = 0.0) -> None:
        """Abandon the reading: workers stop at their next item or wait. With `wait`, give
        them up to that many seconds to get there (a request in flight ends first), so that
        nothing they do, or log, comes after what the caller does next."""
        self._stopped.set()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _discard(self, key: K) -> None:
        """Free `key`'s slot; a worker still filling its queue sees it dropped and stops."""
        source = self._queues.pop(key, None)
        if source is None:
            return
        self._slots.release()
        while True:  # unblock a worker waiting for room
            try:
                source.get_nowait()
            except queue.Empty:
                return

    def _work(self) -> None:
        while not self._stopped.is_set():
            if not self._slots.acquire(timeout=_POLL_SECONDS):
                continue
            with self._lock:
                if self._next >= len(self._keys):
                    self._slots.release()
                    return
                key = self._keys[self._next]
                self._next += 1
            sink = self._queues.get(key)
            if sink is None:  # dropped before it was started: its slot was freed already
                continue
            try:
                for item in self._fetch(key):
                    if not self._put(key, sink, item):
                        break
                else:
                    self._put(key, sink, _DONE)
            except BaseException as exc:  # raised again on the main thread, in its partition
                self._put(key, sink, _Failed(exc))

    def _put(
        self, key: K, sink: queue.Queue[T | _Failed | _Done], item: T | _Failed | _Done
    ) -> bool:
        """Queue `item`, waiting for room; False when the key was dropped or reading stopped."""
        while not self._stopped.is_set():
            if self._queues.get(key) is not sink:
                return False
            try:
                sink.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False
