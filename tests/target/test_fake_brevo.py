"""The fake Brevo behaves as Brevo does where the target depends on it."""

from __future__ import annotations

from typing import Any

import requests

from fakes.brevo import BREVO_RATE_LIMITS, FakeBrevo

KEY = {"api-key": "xkeysib-test"}


def post(fake: FakeBrevo, path: str, body: Any, headers: dict[str, str] = KEY) -> Any:
    return requests.post(f"{fake.base_url}/v3{path}", json=body, headers=headers, timeout=5)


def test_import_lands_only_when_its_process_completes(brevo: FakeBrevo) -> None:
    list_id = brevo.add_list("all")
    brevo.attributes["MG_OPEN_RATE"] = "float"
    brevo.import_seconds = 3600.0  # Brevo is busy: nothing completes while the test looks
    rows = [
        {"email": " Ann@X.com ", "attributes": {"MG_OPEN_RATE": 0.5, "NOPE": 1, "FIRSTNAME": 3}},
        {"email": "not-an-email"},
    ]
    body = {"jsonBody": rows, "listIds": [list_id], "emailBlacklist": True}
    answer = post(brevo, "/contacts/import", body)
    assert answer.status_code == 202
    process = f"{brevo.base_url}/v3/processes/{answer.json()['processId']}"
    statuses = [requests.get(process, headers=KEY, timeout=5).json()["status"] for _ in range(5)]
    assert statuses == ["processing"] * 5  # asking does not move it: only time does
    assert brevo.contacts == {}
    brevo.settle()  # the time passes
    assert requests.get(process, headers=KEY, timeout=5).json()["status"] == "completed"
    # unknown attribute and wrong-typed value silently dropped, as Brevo does
    assert brevo.state()["contacts"] == {
        "ann@x.com": {
            "id": 1,
            "email": "ann@x.com",
            "attributes": {"MG_OPEN_RATE": 0.5},
            "emailBlacklisted": True,
            "listIds": [list_id],
        }
    }
    assert brevo.processes[1]["info"] == {"import": {"invalid_emails": 1}}


def test_imports_queue_one_after_another_and_the_listing_is_newest_first(
    brevo: FakeBrevo,
) -> None:
    list_id = brevo.add_list("all")
    brevo.import_seconds = 3600.0
    for email in ("a@x.com", "b@x.com"):
        post(brevo, "/contacts/import", {"jsonBody": [{"email": email}], "listIds": [list_id]})
    listing = requests.get(
        f"{brevo.base_url}/v3/processes", params={"limit": 50}, headers=KEY, timeout=5
    ).json()
    assert listing["count"] == 2
    assert [(p["id"], p["status"]) for p in listing["processes"]] == [
        (2, "queued"),  # waits for the one before it
        (1, "processing"),
    ]


def test_import_without_a_list_is_refused(brevo: FakeBrevo) -> None:
    answer = post(brevo, "/contacts/import", {"jsonBody": [{"email": "a@x.com"}]})
    assert answer.status_code == 400
    assert "listIds" in answer.json()["message"]


def test_events_batch_partial_and_total_failure(brevo: FakeBrevo) -> None:
    good = {"event_name": "email_opened", "identifiers": {"email_id": "a@x.com"}}
    bad = {"event_name": "bad name", "identifiers": {"email_id": "a@x.com"}}
    assert post(brevo, "/events/batch", {"events": [good]}).status_code == 202
    partial = post(brevo, "/events/batch", {"events": [good, bad]})
    assert partial.status_code == 207
    assert partial.json()["errors"][0]["eventIndex"] == [1]
    assert post(brevo, "/events/batch", {"events": [bad]}).status_code == 400
    assert len(brevo.events) == 2


def test_wrong_key_is_401_and_rate_limit_is_429_with_headers() -> None:
    with FakeBrevo(rate_limits={**BREVO_RATE_LIMITS, "contacts": (2, 60.0)}) as fake:
        url = f"{fake.base_url}/v3/contacts/lists"
        assert requests.get(url, headers={"api-key": "wrong"}, timeout=5).status_code == 401
        answers = [requests.get(url, headers=KEY, timeout=5) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["x-sib-ratelimit-remaining"] == "1"
        assert answers[2].headers["x-sib-ratelimit-limit"] == "2"
        assert 1 <= int(answers[2].headers["x-sib-ratelimit-reset"]) <= 61
        assert fake.violations == []


def test_list_add_takes_at_most_150_emails_and_state_endpoint(brevo: FakeBrevo) -> None:
    list_id = brevo.add_list("engaged")
    too_many = post(brevo, f"/contacts/lists/{list_id}/contacts/add", {"emails": ["a@x.com"] * 151})
    assert too_many.status_code == 400
    brevo.violations.clear()  # the spec rejects it too: that rejection is the point here
    state = requests.get(f"{brevo.base_url}/_fake/state", timeout=5).json()
    assert state["lists"] == {str(list_id): {"id": list_id, "name": "engaged", "folderId": 1}}


def test_an_import_completes_with_time_without_being_asked(brevo: FakeBrevo) -> None:
    brevo.import_seconds = 0.0
    list_id = brevo.add_list("all")
    post(brevo, "/contacts/import", {"jsonBody": [{"email": "a@x.com"}], "listIds": [list_id]})
    assert "a@x.com" in brevo.contacts  # nobody polled
    assert brevo.calls("GET") == []
    assert brevo.processes[1]["status"] == "completed"


def test_every_answer_carries_the_rate_limit_headers_of_its_bucket(brevo: FakeBrevo) -> None:
    lists = [requests.get(f"{brevo.base_url}/v3/contacts/lists", headers=KEY, timeout=5)]
    lists.append(requests.get(f"{brevo.base_url}/v3/contacts/lists", headers=KEY, timeout=5))
    event = {"event_name": "email_opened", "identifiers": {"email_id": "a@x.com"}}
    batch = post(brevo, "/events/batch", {"events": [event]})
    listing = requests.get(f"{brevo.base_url}/v3/processes", headers=KEY, timeout=5)
    for answer in (*lists, batch, listing):
        assert {"x-sib-ratelimit-limit", "x-sib-ratelimit-remaining", "x-sib-ratelimit-reset"} <= {
            k.lower() for k in answer.headers
        }, answer.headers
    remaining = [int(a.headers["x-sib-ratelimit-remaining"]) for a in lists]
    assert remaining[1] == remaining[0] - 1  # one bucket, counted down
    assert listing.headers["x-sib-ratelimit-limit"] == "100"  # the hourly /processes bucket
    assert int(listing.headers["x-sib-ratelimit-reset"]) > 3000
