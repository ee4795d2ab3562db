"""The record builders: one shape for events, whatever way they arrive."""

from __future__ import annotations

from collections import OrderedDict

from tap_mailgun.records import epoch_to_iso, event_record, rfc2822_to_iso, snake_keys


def test_snake_keys_renames_every_level_and_keeps_values() -> None:
    raw = {
        "delivery-status": {"attempt-no": 1, "code": 550, "enhanced-code": "5.1.1"},
        "tags": ["a-b", {"x-y": [{"deep-er": None}]}],
        "user-variables": OrderedDict({"first-name": "Ann"}),
        "url": "https://x.com/a-b",
    }
    assert snake_keys(raw) == {
        "delivery_status": {"attempt_no": 1, "code": 550, "enhanced_code": "5.1.1"},
        "tags": ["a-b", {"x_y": [{"deep_er": None}]}],
        "user_variables": {"first_name": "Ann"},
        "url": "https://x.com/a-b",
    }


def test_event_record_adds_domain_and_both_timestamps() -> None:
    record = event_record({"id": "x", "event": "opened", "timestamp": 1700000000.1234567}, "mg.a")
    assert record["domain"] == "mg.a"
    assert record["timestamp_epoch"] == 1700000000.1234567
    assert record["timestamp"] == "2023-11-14T22:13:20.123457+00:00"


def test_time_conversions() -> None:
    assert epoch_to_iso(0) == "1970-01-01T00:00:00.000000+00:00"
    assert rfc2822_to_iso("Fri, 21 Oct 2011 11:02:55 UTC") == "2011-10-21T11:02:55.000000+00:00"
    assert rfc2822_to_iso("Fri, 21 Oct 2011 13:02:55 +0200") == "2011-10-21T11:02:55.000000+00:00"
