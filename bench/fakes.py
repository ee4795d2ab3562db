"""The fake Mailgun with an index on its events, so a benchmark measures the tap, not the fake.

`FakeMailgun.select_events` finds each events page by scanning every stored event of the
domain, which is right for tests (a few hundred events) but quadratic over a traversal: at
1,000,000 events a full read would cost billions of comparisons inside the fake. Here the same
pages come from a binary search over the (timestamp, id) order the fake already keeps. Answers
are identical (tests/bench/test_fakes.py compares both); only the cost of finding them changes,
and with it the share of the tap's wall time that is really the fake's.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from fakes.mailgun import (
    FakeMailgun,
    event_key,
    logs_event_wanted,
    query_kinds,
    query_window,
)


def past_cursor(
    keys: list[tuple[float, str]], lo: int, hi: int, after: list[Any] | None, *, ascending: bool
) -> tuple[int, int]:
    """The bounds [lo, hi) of sorted `keys` narrowed to what comes after the page cursor
    `after` (the last page's final timestamp and id) in the listing's order; as they are
    without a cursor."""
    if after is None:
        return lo, hi
    cursor = (float(after[0]), str(after[1]))
    if ascending:
        return max(lo, bisect_right(keys, cursor)), hi
    return lo, min(hi, bisect_left(keys, cursor))


class IndexedFakeMailgun(FakeMailgun):
    """FakeMailgun whose events pages are found by binary search instead of a scan."""

    def __init__(self, **kwargs: Any) -> None:
        self.sort_keys: dict[str, list[tuple[float, str]]] = {}
        self._account: tuple[tuple[int, ...], list[tuple[float, str]], list[Any]] | None = None
        super().__init__(**kwargs)

    def account_index(self) -> tuple[list[tuple[float, str]], list[tuple[dict[str, Any], str]]]:
        """Every domain's events merged in (timestamp, id) order: sort keys, (event, domain);
        rebuilt when events were added since."""
        sizes = tuple(len(self.events[d]) for d in self.domains)
        if self._account is None or self._account[0] != sizes:
            merged = sorted(
                ((event_key(e), e, d) for d in self.domains for e in self.events[d]),
                key=lambda m: m[0],
            )
            self._account = (sizes, [m[0] for m in merged], [(m[1], m[2]) for m in merged])
        return self._account[1], self._account[2]

    def select_logs(
        self, query: dict[str, Any], after: list[Any] | None
    ) -> tuple[list[tuple[float, dict[str, Any], str]], bool]:
        """The page `FakeMailgun.select_logs` answers, from the merged index: bisect to the
        window or the cursor, then walk in the query's order until a page and one more."""
        keys, items = self.account_index()
        ascending = query["sort"] == "timestamp:asc"
        # Whole-second bounds, a millisecond either side: logs_event_wanted decides exactly.
        lo = bisect_left(keys, (query["start"] - 0.001,))
        hi = bisect_left(keys, (query["end"] + 0.001,))
        lo, hi = past_cursor(keys, lo, hi, after, ascending=ascending)
        limit = int(query["limit"])
        order = range(lo, hi) if ascending else range(hi - 1, lo - 1, -1)
        page: list[tuple[float, dict[str, Any], str]] = []
        for i in order:
            event, domain = items[i]
            if self.logs_domain_wanted(query, domain) and logs_event_wanted(query, event):
                if len(page) == limit:
                    return page, True
                page.append((keys[i][0], event, domain))
        return page, False

    def index(self, domain: str) -> list[tuple[float, str]]:
        """Sort keys of a domain's events, rebuilt when events were added since."""
        events = self.events[domain]
        keys = self.sort_keys.get(domain)
        if keys is None or len(keys) != len(events):
            keys = self.sort_keys[domain] = [event_key(e) for e in events]
        return keys

    def select_events(
        self, domain: str, query: dict[str, Any], after: list[Any] | None
    ) -> list[dict[str, Any]]:
        """The page `FakeMailgun.select_events` answers, found by bisecting the sort keys."""
        events = self.events[domain]
        keys = self.index(domain)
        begin, end = query_window(query)
        lo, hi = bisect_left(keys, (begin,)), bisect_left(keys, (end,))
        ascending = query["ascending"] == "yes"
        lo, hi = past_cursor(keys, lo, hi, after, ascending=ascending)
        kinds = query_kinds(query)
        limit = int(query["limit"])
        order = range(lo, hi) if ascending else range(hi - 1, lo - 1, -1)
        page: list[dict[str, Any]] = []
        for i in order:
            if kinds is None or events[i]["event"] in kinds:
                page.append(events[i])
                if len(page) >= limit:
                    break
        return page
