"""Domains, suppressions, tags, metrics and mailing lists against the fake Mailgun."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING

import pytest

from fakes.events import mailgun_event
from fakes.mailgun import FakeMailgun, days_ago
from fakes.server import json_response
from tap_mailgun.streams import METRIC_GROUPS, DomainPartitionedStream
from tap_mailgun.tap import TapMailgun
from tests.tap.conftest import API_KEY, DOMAIN, OTHER_DOMAIN, hours_ago, run_tap, tap_config

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


def bounce(address: str, days: float, code: object = "550") -> dict[str, object]:
    return {
        "address": address,
        "code": code,
        "error": "mailbox unavailable",
        "created_at": format_datetime(days_ago(days)).replace("+0000", "UTC"),
    }


def test_suppressions_page_through_cursors_and_convert_dates(mailgun: FakeMailgun) -> None:
    for i in range(2300):
        mailgun.add_suppression(DOMAIN, "bounces", bounce(f"user{i:05d}@x.com", 3, code=550))
    mailgun.add_suppression(
        DOMAIN,
        "unsubscribes",
        {"address": "u@x.com", "tags": ["news"], "created_at": "Mon, 01 Jan 2024 10:00:00 UTC"},
    )
    mailgun.add_suppression(
        OTHER_DOMAIN,
        "complaints",
        {"address": "c@x.com", "created_at": "Tue, 02 Jan 2024 10:00:00 UTC"},
    )

    run = run_tap(tap_config(mailgun), "bounces", "complaints", "unsubscribes")

    bounces = run.records["bounces"]
    assert len(bounces) == 2300
    assert len({r["address"] for r in bounces}) == 2300
    assert bounces[0]["domain"] == DOMAIN and bounces[0]["code"] == 550
    calls = mailgun.calls("GET", rf"^/v3/{DOMAIN}/bounces$")
    # 1000, 1000, then 300: a short page ends the listing (no empty page asked)
    assert [c.query.get("page") for c in calls] == [None, ["next"], ["next"]]
    assert all(c.query["limit"] == ["1000"] for c in calls)
    assert calls[1].query["address"] == ["user00999@x.com"]
    assert run.records["unsubscribes"] == [
        {
            "address": "u@x.com",
            "tags": ["news"],
            "created_at": "2024-01-01T10:00:00.000000+00:00",
            "domain": DOMAIN,
        }
    ]
    assert run.records["complaints"][0]["domain"] == OTHER_DOMAIN


def test_suppressions_first_run_emits_all_later_runs_only_new(mailgun: FakeMailgun) -> None:
    mailgun.add_suppression(DOMAIN, "bounces", bounce("old@x.com", 400))
    mailgun.add_suppression(DOMAIN, "bounces", bounce("mid@x.com", 2))
    config = tap_config(mailgun, domains=[DOMAIN], start_date="2026-01-01T00:00:00Z")

    run1 = run_tap(config, "bounces")
    assert {r["address"] for r in run1.records["bounces"]} == {"old@x.com", "mid@x.com"}

    mailgun.add_suppression(DOMAIN, "bounces", bounce("new@x.com", 1))
    mailgun.add_suppression(DOMAIN, "bounces", bounce("aaa-new@x.com", 0.5))
    run2 = run_tap(config, "bounces", state=run1.state)

    # The boundary row (created exactly at the bookmark) comes again; older rows do not.
    assert {r["address"] for r in run2.records["bounces"]} == {
        "mid@x.com",
        "new@x.com",
        "aaa-new@x.com",
    }


def test_a_failed_suppression_listing_does_not_move_the_bookmark(mailgun: FakeMailgun) -> None:
    """Listings are alphabetical, not by time: a partial read must not become a bookmark, or
    the unread (older) rest would be skipped for good."""
    mailgun.add_suppression(DOMAIN, "bounces", bounce("zed-old@x.com", 30))
    recent = [bounce(f"a{i:04d}@x.com", 1) for i in range(1000)]
    link = f"{mailgun.base_url}/v3/{DOMAIN}/bounces?page=next&address=a0999%40x.com&limit=1000"
    mailgun.fail_next(
        rf"GET /v3/{DOMAIN}/bounces$", 200, {"items": recent, "paging": {"next": link}}
    )
    mailgun.fail_next(rf"GET /v3/{DOMAIN}/bounces$", 503, times=1)
    config = tap_config(mailgun, domains=[DOMAIN], max_retries=0)

    first = run_tap(config, "bounces")

    assert len(first.records["bounces"]) == 1000 and first.failures
    (part,) = first.state["bookmarks"]["bounces"]["partitions"]
    assert "replication_key_value" not in part and "progress_markers" not in part
    second = run_tap(config, "bounces", state=first.state)
    assert [r["address"] for r in second.records["bounces"]] == ["zed-old@x.com"]


def test_domains_page_with_skip_and_never_emit_the_smtp_password(mailgun: FakeMailgun) -> None:
    for i in range(1200):
        mailgun.add_domain(f"d{i:04d}.example.com", state="unverified" if i % 2 else "active")

    run = run_tap(tap_config(mailgun), "domains")

    names = [r["name"] for r in run.records["domains"]]
    assert len(names) == 1202
    skips = [c.query["skip"] for c in mailgun.calls("GET", "^/v4/domains$")]
    assert skips == [["0"], ["1000"]]
    assert all("smtp_password" not in r for r in run.records["domains"])
    assert run.records["domains"][0]["created_at"] == "2024-01-01T00:00:00.000000+00:00"


def test_without_configured_domains_every_active_domain_is_read(mailgun: FakeMailgun) -> None:
    mailgun.add_domain("mg.paused.com", state="disabled")
    for domain in (DOMAIN, OTHER_DOMAIN, "mg.paused.com"):
        mailgun.add_suppression(domain, "bounces", bounce(f"a@{domain}", 1))

    run = run_tap(tap_config(mailgun, domains=[]), "bounces")

    assert {r["domain"] for r in run.records["bounces"]} == {DOMAIN, OTHER_DOMAIN}
    assert mailgun.calls("GET", "^/v3/mg.paused.com/") == []


def domain_names(tap: TapMailgun) -> list[str]:
    """The domains the tap's per-domain streams read in this run."""
    stream = tap.streams["bounces"]
    assert isinstance(stream, DomainPartitionedStream)
    return stream.domains.names


def test_domains_come_from_the_environment_too(mailgun: FakeMailgun, monkeypatch) -> None:
    mailgun.add_tag(OTHER_DOMAIN, "x")
    monkeypatch.setenv("TAP_MAILGUN_DOMAINS", f'["{OTHER_DOMAIN}"]')
    config = tap_config(mailgun)
    del config["domains"]
    tap = TapMailgun(config=config, parse_env_config=True)
    assert domain_names(tap) == [OTHER_DOMAIN]


@pytest.mark.parametrize(
    "configured", [[f"{DOMAIN},{OTHER_DOMAIN}"], [DOMAIN, f" {OTHER_DOMAIN} ,"]]
)
def test_comma_separated_domains_are_split(mailgun: FakeMailgun, configured: list[str]) -> None:
    # Meltano passes MAILGUN_DOMAIN=a.com,b.com to the list setting as ["a.com,b.com"].
    tap = TapMailgun(config=tap_config(mailgun, domains=configured), parse_env_config=False)
    assert domain_names(tap) == [DOMAIN, OTHER_DOMAIN]


def test_tags_are_the_accounts_read_at_once_from_the_v1_api(mailgun: FakeMailgun) -> None:
    for i in range(1200):
        mailgun.add_tag(DOMAIN, f"tag{i:04d}", description="campaign")
    mailgun.add_tag(OTHER_DOMAIN, "tag0000", description="campaign")  # one account: one tag

    run = run_tap(tap_config(mailgun), "tags")

    assert len(run.records["tags"]) == 1200
    assert run.records["tags"][0] == {
        "account_id": "acct-main",
        "parent_account_id": "acct-main",
        "account_name": "acct-main",
        "tag": "tag0000",
        "description": "campaign",
        "first_seen": "2024-01-01T00:00:00Z",
        "last_seen": "2024-01-02T00:00:00Z",
    }
    # Account-wide: no request per domain, and the deprecated v3 tags are not read.
    pages = [c.json()["pagination"] for c in mailgun.calls("POST", "^/v1/analytics/tags$")]
    assert [(p["skip"], p["limit"]) for p in pages] == [(0, 1000), (1000, 1000)]
    assert mailgun.calls("GET", "/tags$") == []


def test_subaccounts_are_included_when_asked(mailgun: FakeMailgun) -> None:
    mailgun.add_domain("mg.client.com", subaccount="sub-1")
    mailgun.add_tag(DOMAIN, "own")
    mailgun.add_tag("mg.client.com", "theirs")
    for domain in (DOMAIN, "mg.client.com"):
        mailgun.add_events(domain, [mailgun_event("delivered", hours_ago(30), domain=domain)])

    without = run_tap(tap_config(mailgun, domains=[]), "tags", "domain_metrics")
    run = run_tap(
        tap_config(mailgun, domains=[], include_subaccounts=True), "tags", "domain_metrics"
    )

    assert [r["tag"] for r in without.records["tags"]] == ["own"]
    assert {r["domain"] for r in without.records["domain_metrics"]} == {DOMAIN}
    tags = {r["tag"]: r["subaccount"] for r in run.records["tags"]}
    assert tags == {"own": None, "theirs": "sub-1"}
    metrics = {r["domain"]: r["subaccount"] for r in run.records["domain_metrics"]}
    assert metrics == {DOMAIN: "acct-main", "mg.client.com": "sub-1"}


def test_domain_and_tag_metrics_count_events_per_day(mailgun: FakeMailgun) -> None:
    base = days_ago(2).replace(hour=12).timestamp()
    events = [
        mailgun_event("accepted", base, tags=["welcome"]),
        mailgun_event("delivered", base + 1, tags=["welcome"]),
        mailgun_event("accepted", base + 2, tags=["welcome"]),
        mailgun_event("failed", base + 3, severity="permanent", tags=["welcome"]),
        mailgun_event("opened", base + 4, tags=["welcome"]),
    ]
    mailgun.add_events(DOMAIN, events)
    config = tap_config(mailgun, domains=[DOMAIN], metrics_lookback_days=2)

    run = run_tap(config, "domain_metrics", "tag_metrics")

    (day,) = run.records["domain_metrics"]
    assert day["domain"] == DOMAIN and day["resolution"] == "day"
    assert day["time"] == days_ago(2).strftime("%Y-%m-%dT00:00:00.000000+00:00")
    assert (day["accepted_count"], day["delivered_count"], day["permanent_failed_count"]) == (
        2,
        1,
        1,
    )
    # Rates are Mailgun's ratios (0 to 1), as numbers.
    assert day["delivered_rate"] == 0.5 and day["opened_rate"] == 1.0
    assert (day["hard_bounces_count"], day["soft_bounces_count"], day["bounce_rate"]) == (
        1,
        0,
        0.5,
    )
    (tagged,) = run.records["tag_metrics"]
    assert tagged["tag"] == "welcome" and tagged["opened_count"] == 1
    # Mailgun answers at most 10 metrics a query: every metric is asked, 10 at a time.
    queries = mailgun.calls("POST", "^/v1/analytics/metrics$")
    assert all(q.status == 200 and len(q.json()["metrics"]) <= 10 for q in queries)
    domain_queries = [q.json() for q in queries if q.json()["dimensions"] == ["time", "domain"]]
    asked = [m for q in domain_queries for m in q["metrics"]]
    assert sorted(asked) == sorted(set(asked)) and set(day) >= set(asked)
    assert all(day[m] is not None for m in asked)
    body = queries[0].json()
    assert body["dimensions"] == ["time", "domain"]
    assert body["filter"]["AND"][0]["values"][0]["value"] == DOMAIN

    run2 = run_tap(config, "domain_metrics", state=run.state)
    body2 = mailgun.calls("POST", "^/v1/analytics/metrics$")[-1].json()
    bookmark = parsedate_to_datetime(body2["start"])
    assert bookmark == parsedate_to_datetime(format_datetime(days_ago(4))).replace(
        hour=0, minute=0, second=0
    )
    assert len(run2.records["domain_metrics"]) == 1  # the settled day is read again


def test_metrics_page_by_offset(mailgun: FakeMailgun) -> None:
    start = hours_ago(24 * 20)
    mailgun.add_events(
        DOMAIN, [mailgun_event("delivered", start + h * 3600) for h in range(24 * 19)]
    )
    config = tap_config(mailgun, domains=[DOMAIN], metrics_resolution="hour")

    run = run_tap(config, "domain_metrics")

    assert len(run.records["domain_metrics"]) == 24 * 19
    skips = [c.json()["pagination"]["skip"] for c in mailgun.calls("POST", "metrics")]
    assert skips == [0, 300] * 3  # three queries of at most 10 metrics, two pages each
    assert {r["resolution"] for r in run.records["domain_metrics"]} == {"hour"}


def test_mailing_lists_and_their_members(mailgun: FakeMailgun) -> None:
    mailgun.add_list("news@mg.example.com", name="News")
    mailgun.add_list("vip@mg.example.com", name="VIP")
    for i in range(130):
        mailgun.add_member(
            "news@mg.example.com",
            {
                "address": f"m{i:03d}@x.com",
                "name": "M",
                "vars": {"first_name": "Ann"},
                "subscribed": i % 2 == 0,
            },
        )
    mailgun.add_member("vip@mg.example.com", {"address": "boss@x.com"})

    run = run_tap(tap_config(mailgun), "mailing_lists", "list_members")

    assert [r["address"] for r in run.records["mailing_lists"]] == [
        "news@mg.example.com",
        "vip@mg.example.com",
    ]
    members = run.records["list_members"]
    assert len(members) == 131
    assert members[0] == {
        "address": "m000@x.com",
        "name": "M",
        "vars": {"first_name": "Ann"},
        "subscribed": True,
        "list_address": "news@mg.example.com",
    }
    assert members[-1]["list_address"] == "vip@mg.example.com"
    assert len(mailgun.calls("GET", "^/v3/lists/news@mg.example.com/members/pages$")) == 3


def test_fields_mailgun_adds_later_are_kept(mailgun: FakeMailgun) -> None:
    mailgun.add_suppression(DOMAIN, "bounces", {**bounce("a@x.com", 1), "mx-host": "mx.x.com"})
    mailgun.add_tag(DOMAIN, "t")
    mailgun.tags[DOMAIN]["t"]["new-field"] = {"nested-key": 1}  # served by the v1 tags too

    run = run_tap(tap_config(mailgun, domains=[DOMAIN]), "bounces", "tags")

    assert run.records["bounces"][0]["mx_host"] == "mx.x.com"
    assert run.records["tags"][0]["new_field"] == {"nested_key": 1}


def test_an_account_without_active_domains_syncs_nothing_quietly() -> None:
    with FakeMailgun(api_key=API_KEY) as empty:
        empty.add_domain("mg.new.com", state="unverified")
        run = run_tap({"api_key": API_KEY, "base_url": empty.base_url})
        assert empty.violations == []
        assert empty.calls("GET", "/v3/mg.new.com/|%7Bdomain%7D|{domain}") == []
    assert not run.failures
    assert [r["name"] for r in run.records["domains"]] == ["mg.new.com"]
    assert not run.records["events"] and not run.records["bounces"]


def test_monthly_metrics_rows_are_never_partial_on_a_later_run(mailgun: FakeMailgun) -> None:
    """The lookback from a bookmark on the 1st lands mid-month: unaligned, the previous
    month's row came back counting only its last days and replaced the full one downstream."""
    now = datetime.now(timezone.utc)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    mid_last = (last_month + timedelta(days=4)).timestamp()
    end_last = (this_month - timedelta(hours=12)).timestamp()
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", mid_last + i) for i in range(10)])
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", end_last + i) for i in range(2)])
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", this_month.timestamp() + 1)])
    # start_date is mid-month too: the first row must still count its whole month.
    config = tap_config(
        mailgun,
        domains=[DOMAIN],
        metrics_resolution="month",
        start_date=(last_month + timedelta(days=2, hours=5)).isoformat(),
    )

    run1 = run_tap(config, "domain_metrics")
    run2 = run_tap(config, "domain_metrics", state=run1.state)

    first = {r["time"]: r["delivered_count"] for r in run1.records["domain_metrics"]}
    assert first == {
        last_month.isoformat(timespec="microseconds"): 12,
        this_month.isoformat(timespec="microseconds"): 1,
    }
    for row in run2.records["domain_metrics"]:
        assert row["delivered_count"] == first[row["time"]], row["time"]
    starts = [parsedate_to_datetime(c.json()["start"]) for c in mailgun.calls("POST", "metrics")]
    assert set(starts) == {last_month}


def test_hourly_metrics_start_on_the_hour(mailgun: FakeMailgun) -> None:
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=5
    )
    mailgun.add_events(
        DOMAIN, [mailgun_event("delivered", hour.timestamp() + 60 * i) for i in range(50)]
    )
    config = tap_config(
        mailgun,
        domains=[DOMAIN],
        metrics_resolution="hour",
        start_date=(hour + timedelta(minutes=30)).isoformat(),
    )

    run = run_tap(config, "domain_metrics")

    (row,) = run.records["domain_metrics"]
    assert row["time"] == hour.isoformat(timespec="microseconds")
    assert row["delivered_count"] == 50
    starts = {parsedate_to_datetime(c.json()["start"]) for c in mailgun.calls("POST", "metrics")}
    assert starts == {hour}


def test_daily_metrics_without_start_date_start_at_midnight(mailgun: FakeMailgun) -> None:
    run_tap(tap_config(mailgun, domains=[DOMAIN]), "domain_metrics")

    (start,) = {parsedate_to_datetime(c.json()["start"]) for c in mailgun.calls("POST", "metrics")}
    assert start == start.replace(hour=0, minute=0, second=0, microsecond=0)
    assert timedelta(days=30) <= datetime.now(timezone.utc) - start < timedelta(days=32)


class RacingMailgun(FakeMailgun):
    """While page 2 of a bounce listing is served, two addresses bounce: one sorts before
    the cursor (this traversal never sees it), one after (this traversal emits it).
    Its clock is `skew` off the tap's: created_at and the Date header follow its clock."""

    def __init__(self, skew: timedelta) -> None:
        super().__init__(api_key=API_KEY)
        self.skew = skew
        self.raced = False

    def list_supp(self, request: Request, domain: str, kind: str) -> Response:
        now = datetime.now(timezone.utc) + self.skew
        if request.args.get("page") == "next" and not self.raced:
            self.raced = True
            for address, when in (
                ("aaa-racer@x.com", now - timedelta(seconds=2)),
                ("zzz@x.com", now),
            ):
                item = {**bounce(address, 0), "created_at": format_datetime(when)}
                self.suppressions[(domain, kind)][address] = item
        response = super().list_supp(request, domain, kind)
        response.headers["Date"] = format_datetime(now, usegmt=True)
        return response


@pytest.mark.parametrize(
    "skew", [timedelta(0), timedelta(hours=-1)], ids=["same-clock", "mailgun-behind"]
)
def test_a_suppression_created_behind_the_cursor_is_read_next_run(skew: timedelta) -> None:
    """Listings are alphabetical: the bookmark may not pass the listing's start (by Mailgun's
    clock), or an address created behind the cursor during the run is skipped for good."""
    fake = RacingMailgun(skew)
    fake.add_domain(DOMAIN)
    for i in range(1000):
        fake.add_suppression(DOMAIN, "bounces", bounce(f"m{i:04d}@x.com", 3))
    with fake:
        config = tap_config(fake, domains=[DOMAIN])
        run1 = run_tap(config, "bounces")
        run2 = run_tap(config, "bounces", state=run1.state)
        assert fake.violations == []

    first = {r["address"] for r in run1.records["bounces"]}
    assert "zzz@x.com" in first and "aaa-racer@x.com" not in first  # the race happened
    second = {r["address"] for r in run2.records["bounces"]}
    assert "aaa-racer@x.com" in second
    assert not second & {f"m{i:04d}@x.com" for i in range(1000)}  # old rows do not come back


class LateMailgun(FakeMailgun):
    """Right after serving a short (last) page of bounces, an address sorting after all
    others bounces: the listing, ended by that short page, never sees it."""

    def list_supp(self, request: Request, domain: str, kind: str) -> Response:
        response = super().list_supp(request, domain, kind)
        if not self.suppressions.get((domain, kind), {}).get("zzz-late@x.com"):
            item = {**bounce("zzz-late@x.com", 0), "created_at": format_datetime(days_ago(0))}
            self.suppressions[(domain, kind)]["zzz-late@x.com"] = item
        return response


def test_an_address_added_after_the_short_last_page_is_read_next_run() -> None:
    fake = LateMailgun(api_key=API_KEY)
    fake.add_domain(DOMAIN)
    fake.add_suppression(DOMAIN, "bounces", bounce("a@x.com", 3))
    with fake:
        config = tap_config(fake, domains=[DOMAIN])
        run1 = run_tap(config, "bounces")
        run2 = run_tap(config, "bounces", state=run1.state)
        assert fake.violations == []

    assert [r["address"] for r in run1.records["bounces"]] == ["a@x.com"]  # one page, short
    assert len(fake.calls("GET", rf"^/v3/{DOMAIN}/bounces$")) == 2  # one page each run
    assert "zzz-late@x.com" in {r["address"] for r in run2.records["bounces"]}


class MetricsFailingOnce(FakeMailgun):
    """Answers 500 to the `nth` metrics query (counting from 1), once."""

    def __init__(self, nth: int) -> None:
        super().__init__(api_key=API_KEY)
        self.nth = nth
        self.seen = 0

    def metrics(self, request: Request) -> Response:
        self.seen += 1
        if self.seen == self.nth:
            return json_response({"message": "Internal Server Error"}, 500)
        return super().metrics(request)


def test_a_metrics_row_is_never_emitted_with_part_of_its_metrics() -> None:
    """Each row is asked in several queries (10 metrics each): when one fails, the domain's
    rows are not emitted half empty (they would replace full rows downstream)."""
    fake = MetricsFailingOnce(nth=2)
    fake.add_domain(DOMAIN)
    sent = hours_ago(30)
    fake.add_events(DOMAIN, [mailgun_event("accepted", sent), mailgun_event("delivered", sent + 1)])
    with fake:
        config = tap_config(fake, domains=[DOMAIN], max_retries=0)
        run1 = run_tap(config, "domain_metrics")
        assert run1.records["domain_metrics"] == [] and run1.failures
        assert fake.seen == 2  # no third query once the second failed
        assert "replication_key_value" not in run1.state["bookmarks"]["domain_metrics"]
        run2 = run_tap(config, "domain_metrics", state=run1.state)
        assert fake.violations == []

    (row,) = run2.records["domain_metrics"]
    assert row["delivered_count"] == 1 and row["delivered_rate"] == 1.0
    assert not run2.failures


def test_metrics_are_asked_for_the_whole_account_at_once(mailgun: FakeMailgun) -> None:
    names = [f"mg{i:03d}.example.net" for i in range(30)]
    for name in names:
        mailgun.add_domain(name)
        mailgun.add_events(name, [mailgun_event("delivered", hours_ago(30), domain=name)])

    everything = run_tap(tap_config(mailgun, domains=[]), "domain_metrics", "tag_metrics")
    queries = [c.json() for c in mailgun.calls("POST", "^/v1/analytics/metrics$")]
    some = run_tap(tap_config(mailgun, domains=names[:2]), "domain_metrics")

    # One query per group of metrics and stream, whatever the number of domains.
    assert len(queries) == 2 * len(METRIC_GROUPS)
    assert all("filter" not in q for q in queries)
    assert {r["domain"] for r in everything.records["domain_metrics"]} == set(names)
    assert {r["domain"] for r in everything.records["tag_metrics"]} == set(names)
    last = mailgun.calls("POST", "^/v1/analytics/metrics$")[-1].json()
    assert [v["value"] for v in last["filter"]["AND"][0]["values"]] == names[:2]
    assert {r["domain"] for r in some.records["domain_metrics"]} == set(names[:2])


def test_per_domain_metrics_state_carries_over_and_is_dropped(mailgun: FakeMailgun) -> None:
    """A state written when metrics were read per domain: the earliest domain's bookmark is
    where the account-wide query resumes (nothing skipped), and the old partitions go."""
    mailgun.add_events(DOMAIN, [mailgun_event("delivered", hours_ago(30))])
    older, newer = days_ago(6).replace(microsecond=0), days_ago(2).replace(microsecond=0)
    partitions = [
        {"context": {"domain": DOMAIN}, "replication_key": "time",
         "replication_key_value": newer.isoformat()},
        {"context": {"domain": OTHER_DOMAIN}, "replication_key": "time",
         "replication_key_value": older.isoformat()},
    ]  # fmt: skip
    state = {"bookmarks": {"domain_metrics": {"partitions": partitions}}}
    config = tap_config(mailgun, metrics_lookback_days=1)

    run = run_tap(config, "domain_metrics", state=state)

    (query, *_) = (c.json() for c in mailgun.calls("POST", "^/v1/analytics/metrics$"))
    assert parsedate_to_datetime(query["start"]) == (older - timedelta(days=1)).replace(
        hour=0, minute=0, second=0
    )
    bookmark = run.state["bookmarks"]["domain_metrics"]
    assert "partitions" not in bookmark and bookmark["replication_key_value"]
    assert len(run.records["domain_metrics"]) == 1


class ListDeletingMailgun(FakeMailgun):
    """A list is deleted right after the lists page that names it is served."""

    def list_lists(self, request: Request) -> Response:
        response = super().list_lists(request)
        self.lists.pop("gone@mg.example.com", None)
        return response


def test_a_list_deleted_before_its_members_are_read_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = ListDeletingMailgun(api_key=API_KEY)
    fake.add_domain(DOMAIN)
    for address in ("gone@mg.example.com", "kept@mg.example.com"):
        fake.add_list(address)
        fake.add_member(address, {"address": f"m@{address.split('@')[0]}.com"})
    with fake:
        run = run_tap(tap_config(fake, domains=[DOMAIN]), "mailing_lists", "list_members")
        assert fake.violations == []
        assert fake.calls("GET", "^/v3/lists/gone@mg.example.com/members/pages$")[0].status == 404

    assert [r["address"] for r in run.records["mailing_lists"]] == [
        "gone@mg.example.com",
        "kept@mg.example.com",
    ]
    assert [r["list_address"] for r in run.records["list_members"]] == ["kept@mg.example.com"]
    assert not run.failures
    assert "Mailing list gone@mg.example.com was deleted during the run" in caplog.text
