"""The fake Mailgun with an index on its events, so a benchmark measures the tap, not the fake.

`FakeMailgun` finds each events page by scanning every stored event of the domain, which is
right for tests (a few hundred events) but quadratic over a traversal: at 1,000,000 events a
full read would cost billions of comparisons inside the fake. Here the same pages come from a
binary search over the (timestamp, id) order the fake already keeps. Answers are
identical (tests/bench/test_fakes.py compares both); only the cost of finding them changes,
and with it the share of the tap's wall time that is really the fake's.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any

from fakes.mailgun import FakeMailgun, _parse_time

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


class IndexedFakeMailgun(FakeMailgun):
    """FakeMailgun whose events pages are found by binary search instead of a scan."""

    def __init__(self, **kwargs: Any) -> None:
        self._keys: dict[str, list[tuple[float, str]]] = {}
        self._after: list[Any] | None = None
        super().__init__(**kwargs)

    def _index(self, domain: str) -> list[tuple[float, str]]:
        """Sort keys of a domain's events, rebuilt when events were added since."""
        events = self.events[domain]
        keys = self._keys.get(domain)
        if keys is None or len(keys) != len(events):
            keys = [(float(e["timestamp"]), str(e["id"])) for e in events]
            self._keys[domain] = keys
        return keys

    def _events_page(
        self, request: Request, domain: str, query: dict[str, Any], after: list[Any] | None
    ) -> Response:
        # Handlers run under self.lock, so the cursor can be handed to _select_events here.
        self._after = after
        return super()._events_page(request, domain, query, after)

    def _select_events(self, domain: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """At most one page of events past the cursor, in the query's order.

        The caller filters by cursor and slices a page itself; both are no-ops on this answer.
        """
        if domain not in self.domains:
            return []
        events = self.events[domain]
        keys = self._index(domain)
        begin = _parse_time(query["begin"]) if query.get("begin") else -math.inf
        end = _parse_time(query["end"]) if query.get("end") else math.inf
        lo, hi = bisect_left(keys, (begin,)), bisect_left(keys, (end,))
        ascending = query["ascending"] == "yes"
        if self._after is not None:
            cursor = (float(self._after[0]), str(self._after[1]))
            if ascending:
                lo = max(lo, bisect_right(keys, cursor))
            else:
                hi = min(hi, bisect_left(keys, cursor))
        kinds = {k.strip() for k in query["event"].split(" OR ")} if query.get("event") else None
        limit = int(query["limit"])
        order = range(lo, hi) if ascending else range(hi - 1, lo - 1, -1)
        page: list[dict[str, Any]] = []
        for i in order:
            if kinds is None or events[i]["event"] in kinds:
                page.append(events[i])
                if len(page) >= limit:
                    break
        return page
