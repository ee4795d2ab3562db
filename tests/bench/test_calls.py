"""The rules that say what the fewest API calls would have been, on hand-made requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import calls
from bench.calls import Call


def _post(path: str, body: dict[str, Any]) -> Call:
    return Call("POST", path, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v3/mg.example.com/events", "/v3/{domain}/events"),
        ("/v3/mg.example.com/events/eyJxIjp7fQ", "/v3/{domain}/events/{page}"),
        ("/v3/lists/customers@mg.example.com/members/pages", "/v3/lists/{address}/members/pages"),
        ("/v3/contacts/attributes/normal/MG_SCORE", "/v3/contacts/attributes/{category}/{name}"),
        ("/v3/contacts/lists/12/contacts/add", "/v3/contacts/lists/{id}/contacts/add"),
        ("/v3/processes/7", "/v3/processes/{id}"),
        ("/v3/events/batch", "/v3/events/batch"),
        ("/v4/domains", "/v4/domains"),
    ],
)
def test_endpoint_templates(path: str, template: str) -> None:
    assert calls.endpoint(path) == template


def test_events_batches_are_judged_by_200_events_per_call() -> None:
    full = [_post("/v3/events/batch", {"events": [{"event_name": "x"}] * 200})] * 3
    half = [_post("/v3/events/batch", {"events": [{"event_name": "x"}] * 100})] * 6
    table_full = calls.brevo_table(full, baseline=600)
    table_half = calls.brevo_table(half, baseline=600)
    assert (table_full["total"], table_full["minimum"], table_full["ratio_to_minimum"]) == (3, 3, 1)
    assert (table_half["total"], table_half["minimum"], table_half["ratio_to_minimum"]) == (6, 3, 2)
    assert table_full["ratio_to_baseline"] == pytest.approx(3 / 600)


def test_imports_with_different_options_cannot_share_a_request() -> None:
    contacts = [{"email": f"p{i}@example.com"} for i in range(10)]
    sent = [
        _post("/v3/contacts/import", {"jsonBody": contacts, "listIds": [1]}),
        _post("/v3/contacts/import", {"jsonBody": contacts, "listIds": [1]}),
        _post(
            "/v3/contacts/import", {"jsonBody": contacts, "listIds": [2], "emailBlacklist": True}
        ),
    ]
    assert calls.brevo_minimum("POST", "/v3/contacts/import", sent) == 2


def test_list_changes_count_distinct_emails_per_list_by_150() -> None:
    emails = [f"p{i}@example.com" for i in range(300)]
    sent = [
        _post("/v3/contacts/lists/1/contacts/add", {"emails": emails[:100]}),
        _post("/v3/contacts/lists/1/contacts/add", {"emails": emails[100:200]}),
        _post("/v3/contacts/lists/1/contacts/add", {"emails": emails[150:300]}),
        _post("/v3/contacts/lists/2/contacts/add", {"emails": emails[:1]}),
    ]
    assert calls.brevo_minimum("POST", "/v3/contacts/lists/{id}/contacts/add", sent) == 2 + 1


def test_setup_calls_need_one_per_resource() -> None:
    polls = [Call("GET", "/v3/processes/1"), Call("GET", "/v3/processes/1")]
    polls.append(Call("GET", "/v3/processes/2"))
    assert calls.brevo_minimum("GET", "/v3/processes/{id}", polls) == 2


def test_mailgun_listings_need_full_pages_and_the_closing_empty_page() -> None:
    sent = [Call("GET", "/v3/a.com/events")] + [Call("GET", "/v3/a.com/events/t")] * 5
    sent += [Call("GET", "/v3/b.com/events"), Call("GET", "/v3/b.com/events/t")]
    sent += [Call("GET", "/v3/lists/l@a.com/members/pages")] * 4
    by_owner = {"events": {"a.com": 1000, "b.com": 0}, "list_members": {"l@a.com": 250}}
    table = calls.mailgun_table(sent, {"events": 1000, "list_members": 250}, by_owner)
    rows = {row["endpoint"]: (row["calls"], row["minimum"]) for row in table["endpoints"]}
    assert rows["GET /v3/{domain}/events"] == (8, (4 + 1) + (0 + 1))
    assert rows["GET /v3/lists/{address}/members/pages"] == (4, 2 + 1)  # ends on a short page
    assert table["total"] == 12 and table["minimum"] == 9


def test_metrics_queries_are_counted_apart_from_their_pagination() -> None:
    query = {"metrics": ["accepted_count"], "resolution": "day"}
    sent = [
        _post("/v1/analytics/metrics", {**query, "pagination": {"skip": 0}}),
        _post("/v1/analytics/metrics", {**query, "pagination": {"skip": 1500}}),
        _post("/v1/analytics/metrics", {**query, "dimensions": ["tag"]}),
    ]
    assert calls.mailgun_minimum("POST", "/v1/analytics/metrics", sent, {}, {}) == 2


def test_rate_limit_floor_counts_paced_calls_at_ten_a_second() -> None:
    sent = [_post("/v3/events/batch", {"events": [{"event_name": "x"}]})] * 30
    sent += [_post("/v3/contacts/import", {"jsonBody": [], "listIds": [1]})] * 5
    sent += [Call("GET", "/v3/processes/1")] * 50  # hourly budget, no per-second cost
    table = calls.brevo_table(sent, baseline=1000)
    assert table["rate_limit_floor_s"] == 3.5
    assert table["baseline_rate_limit_floor_s"] == 100
