"""The benchmark's verdicts and its Markdown table: pure functions of the results dict."""

from __future__ import annotations

from typing import Any

EVENTS_PER_S_GOAL = 20_000
CALLS_RATIO_GOAL = 1.1
# At Brevo's pace (10 calls a second), the target's wall time against its calls / 10.
PACE_RATIO_GOAL = 1.1
# "Flat" memory: peak RSS at the largest size at most this factor of the smallest size's.
FLAT_MEMORY_FACTOR = 1.25


def goals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each goal of the issue, with the figure it was judged on and whether it is met."""
    slowest_tap = min(r["tap"]["events_per_s"] for r in runs)
    slowest_target = min(r["target"]["events_per_s"] for r in runs)
    ratios = [r["calls"]["brevo"]["ratio_to_minimum"] or 0.0 for r in runs]
    verdicts: dict[str, Any] = {
        "tap_events_per_s": {"goal": f">= {EVENTS_PER_S_GOAL}", "value": slowest_tap},
        "target_events_per_s": {"goal": f">= {EVENTS_PER_S_GOAL}", "value": slowest_target},
        "brevo_calls_to_minimum": {"goal": f"<= {CALLS_RATIO_GOAL}", "value": max(ratios)},
    }
    verdicts["tap_events_per_s"]["met"] = slowest_tap >= EVENTS_PER_S_GOAL
    verdicts["target_events_per_s"]["met"] = slowest_target >= EVENTS_PER_S_GOAL
    verdicts["brevo_calls_to_minimum"]["met"] = 0 < max(ratios) <= CALLS_RATIO_GOAL
    paces = [r["paced"]["pace_ratio"] or 0.0 for r in runs]
    verdicts["brevo_pace_ratio"] = {
        "goal": f"<= {PACE_RATIO_GOAL}",
        "value": max(paces),
        "met": 0 < max(paces) <= PACE_RATIO_GOAL,
    }
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        for part in ("tap", "target"):
            growth = round(large[part]["max_rss_mb"] / small[part]["max_rss_mb"], 2)
            verdicts[f"{part}_memory_flat"] = {
                "goal": f"peak RSS at {large['events']:,} <= {FLAT_MEMORY_FACTOR}x "
                f"that at {small['events']:,}",
                "value": growth,
                "met": growth <= FLAT_MEMORY_FACTOR,
            }
    return verdicts


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _row(label: str, runs: list[dict[str, Any]], cell: Any) -> str:
    return f"| {label} | " + " | ".join(cell(r) for r in runs) + " |"


def _baseline(brevo: dict[str, Any]) -> str:
    baseline = brevo["one_call_per_event_baseline"]
    return f"{baseline:,} ({_n(baseline / max(brevo['total'], 1))}x ours)"


def _floor(run: dict[str, Any]) -> str:
    brevo = run["calls"]["brevo"]
    return f"{_n(brevo['rate_limit_floor_s'])} s / {_n(brevo['baseline_rate_limit_floor_s'])} s"


def _pace(run: dict[str, Any]) -> str:
    paced = run["paced"]
    return (
        f"{_n(paced['wall_s'])} s / {_n(paced['floor_s'])} s (**{paced['pace_ratio']}x**), "
        f"{paced['calls']:,} calls, {paced['refused_429']} answered 429"
    )


def _fakes(run: dict[str, Any]) -> str:
    parts = (run["tap"], run["target"], run["pipeline"])
    return " / ".join(_n(p["fakes_cpu_s"]) for p in parts)


def _load(run: dict[str, Any]) -> str:
    parts = (run["tap"], run["target"], run["pipeline"])
    return " / ".join(_n(p["load_avg_1m"]) for p in parts)


def _figures(runs: list[dict[str, Any]]) -> list[str]:
    head = "| | " + " | ".join(f"{r['events']:,} events" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]

    def proc(part: dict[str, Any]) -> str:
        return (
            f"{_n(part['wall_s'])} s wall, {_n(part['cpu_s'])} s CPU, {_n(part['max_rss_mb'])} MB"
        )

    best = f" (best of {runs[0]['repeat']})" if runs[0]["repeat"] > 1 else ""
    lines += [
        _row(f"tap alone: events/s{best}", runs, lambda r: f"**{_n(r['tap']['events_per_s'])}**"),
        _row("tap alone: events per CPU-second", runs, lambda r: _n(r["tap"]["events_per_cpu_s"])),
        _row("tap alone: time, peak RSS", runs, lambda r: proc(r["tap"])),
        _row(
            f"target alone: events/s{best}",
            runs,
            lambda r: f"**{_n(r['target']['events_per_s'])}**",
        ),
        _row(
            "target alone: events per CPU-second",
            runs,
            lambda r: _n(r["target"]["events_per_cpu_s"]),
        ),
        _row("target alone: time, peak RSS", runs, lambda r: proc(r["target"])),
        _row(
            "tap \\| target: events/s", runs, lambda r: f"**{_n(r['pipeline']['events_per_s'])}**"
        ),
        _row("tap \\| target: tap", runs, lambda r: proc(r["pipeline"]["tap"])),
        _row("tap \\| target: target", runs, lambda r: proc(r["pipeline"]["target"])),
        _row(
            "Brevo calls / minimum",
            runs,
            lambda r: (
                f"{r['calls']['brevo']['total']:,} / {r['calls']['brevo']['minimum']:,} "
                f"(**{r['calls']['brevo']['ratio_to_minimum']}x**)"
            ),
        ),
        _row(
            "one call per event (baseline)",
            runs,
            lambda r: _baseline(r["calls"]["brevo"]),
        ),
        _row("Brevo time floor at 10 calls/s: ours / baseline", runs, _floor),
        _row("target at Brevo's pace: wall / (calls / 10 a second)", runs, _pace),
        _row(
            "Mailgun calls / minimum",
            runs,
            lambda r: (
                f"{r['calls']['mailgun']['total']:,} / {r['calls']['mailgun']['minimum']:,} "
                f"({r['calls']['mailgun']['ratio_to_minimum']}x)"
            ),
        ),
        _row("engagement store after", runs, lambda r: f"{r['target']['engagement_store_mb']} MB"),
        _row("fakes' CPU s: tap / target / piped", runs, _fakes),
        _row("load average after: tap / target / piped", runs, _load),
        _row(
            "tap output",
            runs,
            lambda r: f"{r['tap']['output_mb']} MB, {sum(r['tap']['records'].values()):,} records",
        ),
        _row(
            "checks",
            runs,
            lambda r: (
                "all pass"
                if all(r["checks"].values())
                else "FAILED: " + ", ".join(k for k, v in r["checks"].items() if not v)
            ),
        ),
    ]
    return lines


def _endpoints(title: str, table: dict[str, Any]) -> list[str]:
    lines = [f"{title}", "", "| endpoint | calls | minimum |", "|---|---:|---:|"]
    lines += [
        f"| `{e['endpoint']}` | {e['calls']:,} | {e['minimum']:,} |" for e in table["endpoints"]
    ]
    lines.append(f"| **total** | **{table['total']:,}** | **{table['minimum']:,}** |")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown page: machine, figures per size, goals, calls by endpoint."""
    m = result["machine"]
    runs = result["runs"]
    largest = runs[-1]
    lines = [
        f"# Benchmark {result['name']}",
        "",
        f"Measured {result['measured_at']} at commit {result['commit']} on {m['cpu_model']}, "
        f"{m['cores']} cores, {m['memory_gb']} GB, {m['os']}, Python {m['python']}, "
        f"singer-sdk {m['singer_sdk']}, msgspec {m['msgspec']}. Workload: "
        f"{largest['recipients']:,} recipients, {largest['domains']} domains, "
        f"seed {largest['seed']}.",
        "",
        *_figures(runs),
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
    ]
    for name, verdict in result["goals"].items():
        met = "yes" if verdict["met"] else "**no**"
        lines.append(f"| {name} | {verdict['goal']} | {verdict['value']} | {met} |")
    lines.append("")
    lines += _endpoints(
        f"Brevo calls by endpoint ({largest['events']:,} events):", largest["calls"]["brevo"]
    )
    lines += _endpoints(
        f"Mailgun calls by endpoint ({largest['events']:,} events):", largest["calls"]["mailgun"]
    )
    return "\n".join(lines)
