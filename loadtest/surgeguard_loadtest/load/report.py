"""What a load run leaves behind, read back: Locust's CSV files and the run's
``summary.json``. Pure functions over files and records, no network.

Client-side numbers (Locust's) are labelled as such: when the load generator is the
bottleneck they say more about the generator than about the service. The server-side
numbers (the target's own ``/metrics``, see ``watch.py``) are the truth.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from surgeguard_loadtest.load.watch import Window
from surgeguard_loadtest.scenarios import Scenario

SHED_SUFFIX = " [shed]"
REPORT_HTML = "surgeguard_report.html"  # the run's own report, next to Locust's report.html
CPU_WARNING = "CPU usage above"  # Locust logs this when the generator itself saturates


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def client_side(prefix: Path) -> dict[str, Any]:
    """Totals from ``<prefix>_stats.csv``, ``_failures.csv`` and ``_stats_history.csv``."""
    stats = _rows(prefix.with_name(prefix.name + "_stats.csv"))
    by_name = {row["Name"]: row for row in stats}
    total = by_name.get("Aggregated", {})
    shed = sum(
        int(_number(row.get("Request Count")) or 0)
        for name, row in by_name.items()
        if name.endswith(SHED_SUFFIX)
    )
    failures: dict[str, int] = {}
    for row in _rows(prefix.with_name(prefix.name + "_failures.csv")):
        error = row.get("Error", "?")
        failures[error] = failures.get(error, 0) + int(_number(row.get("Occurrences")) or 0)
    history = [
        row
        for row in _rows(prefix.with_name(prefix.name + "_stats_history.csv"))
        if row.get("Name") == "Aggregated"
    ]
    rps = [_number(row.get("Requests/s")) or 0.0 for row in history]
    users = [int(_number(row.get("User Count")) or 0) for row in history]
    return {
        "note": "client-side (Locust); when the generator saturates, trust the server side",
        "requests": int(_number(total.get("Request Count")) or 0),
        "shed": shed,
        "failures": int(_number(total.get("Failure Count")) or 0),
        "failures_by_error": failures,
        "rps_mean": _number(total.get("Requests/s")),
        "rps_peak": max(rps, default=None),
        "users_peak": max(users, default=0),
        "p50_ms": _number(total.get("50%")),
        "p95_ms": _number(total.get("95%")),
        "p99_ms": _number(total.get("99%")),
        "by_name": {
            name: {
                "requests": int(_number(row.get("Request Count")) or 0),
                "failures": int(_number(row.get("Failure Count")) or 0),
                "p99_ms": _number(row.get("99%")),
            }
            for name, row in by_name.items()
            if name != "Aggregated"
        },
    }


def generator_saturated(log_lines: Iterable[str]) -> bool:
    """Did Locust warn that its own CPU was the limit?"""
    return any(CPU_WARNING in line for line in log_lines)


def server_peaks(windows: Sequence[Window]) -> dict[str, Any]:
    """Peaks and memory over the run's one-second windows."""
    rss = [w.rss_mb for w in windows if w.rss_mb is not None]
    limits = [w.limit for w in windows]
    inner = [w.inner_limit for w in windows if w.inner_limit is not None]
    cpu = [w.cpu_cores for w in windows if w.cpu_cores is not None]
    p99s = [w.p99_ms for w in windows if w.p99_ms is not None]
    return {
        "offered_peak_per_s": max((w.offered_per_s for w in windows), default=0.0),
        "admitted_peak_per_s": max((w.admitted_per_s for w in windows), default=0.0),
        "rejected_peak_per_s": max((w.rejected_per_s for w in windows), default=0.0),
        "p99_ms_worst_window": max(p99s, default=None),
        "errors_5xx_windows": sum(1 for w in windows if w.errors_per_s > 0),
        "rss_mb_start": rss[0] if rss else None,
        "rss_mb_max": max(rss, default=None),
        "rss_mb_end": rss[-1] if rss else None,
        "limit_min": min(limits, default=None),
        "limit_max": max(limits, default=None),
        "limit_end": limits[-1] if limits else None,
        "inner_limit_min": min(inner, default=None),
        "inner_limit_median": statistics.median(inner) if inner else None,
        "inner_limit_max": max(inner, default=None),
        "cpu_cores_median": statistics.median(cpu) if cpu else None,
        "cpu_cores_max": max(cpu, default=None),
    }


def windows_json(windows: Sequence[Window]) -> list[dict[str, Any]]:
    return [asdict(w) for w in windows]


def window_second(wall_end: float) -> int:
    """The wall-clock second (unix) a server window stands for: a window ends about a
    second after the one before it, at no particular fraction of a second, so it
    overlaps most the second that began half a second before its end."""
    return math.floor(wall_end - 0.5)


def aligned(
    windows: Sequence[Window],
    seconds: Mapping[int, tuple[int, int, int]],
    wall_of: Callable[[float], float],
    look_back: int = 8,
) -> tuple[Window, tuple[int, int, int] | None] | None:
    """The newest server window whose second Locust has counted, with Locust's counts
    (sent, shed, failed) of that same second; the newest window and None when Locust
    has counted none of the last ``look_back``; None without windows. ``wall_of``: a
    window's ``at`` as unix seconds."""
    for window in reversed(windows[-look_back:]):
        counts = seconds.get(window_second(wall_of(window.at)))
        if counts is not None:
            return window, counts
    return (windows[-1], None) if windows else None


def progress_line(
    elapsed_s: float,
    phase: str,
    target_users: int,
    client: dict[str, Any] | None,
    window: Window | None,
    health_ms: float | None,
    counts: tuple[int, int, int] | None = None,
    age_s: float | None = None,
) -> str:
    """One line for the terminal: where the run is, what Locust sent and what the
    service admitted in one and the same wall-clock second (``counts``: Locust's sent,
    shed, failed in the second of ``window``, ``age_s`` seconds ago). Without counts
    for that second, Locust's totals so far (never its ``current_rps``: a mean over
    about ten seconds that lags the server's one-second windows)."""
    parts = [f"[{elapsed_s:5.0f} s {phase:>10}] users {_int(client, 'users')}/{target_users}"]
    if window is not None and age_s is not None:
        parts.append(f"{age_s:.0f} s ago")
    if counts is not None:
        sent, shed, failed = counts
        parts.append(f"sent {sent:,}/s shed {shed:,}/s fail {failed:,}/s")
    elif client:
        parts.append(
            f"sent {int(client.get('requests', 0)):,} so far, "
            f"{int(client.get('failures', 0)):,} failed"
        )
    if window:
        p99 = "-" if window.p99_ms is None else f"{window.p99_ms:,.0f} ms"
        parts.append(
            f"server: admitted {window.admitted_per_s:,.0f}/s of {window.offered_per_s:,.0f}/s, "
            f"p99 {p99}, limit {window.limit:,.0f}"
        )
    if health_ms is not None:
        parts.append(f"healthz {health_ms:,.0f} ms")
    return " | ".join(parts)


def _int(client: dict[str, Any] | None, key: str) -> str:
    return "?" if not client else f"{int(client.get(key, 0)):,}"


def by_phase(scenario: Scenario, windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The server's windows grouped by the scenario's phase (``at``: the window's end on
    Locust's clock; a window belongs to the phase of its middle): mean rates per
    second, the worst p99 and the lowest limit."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for w in windows:
        groups.setdefault(scenario.phase(max(0.0, float(w["at"]) - 0.5)), []).append(w)

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return round(sum(float(r[key]) for r in rows) / len(rows), 1)

    return {
        name: {
            "windows": len(rows),
            "good_per_s": mean(rows, "good_per_s"),
            "admitted_per_s": mean(rows, "admitted_per_s"),
            "rejected_per_s": mean(rows, "rejected_per_s"),
            "p99_ms_worst": max(
                (r["p99_ms"] for r in rows if r["p99_ms"] is not None), default=None
            ),
            "limit_min": min(float(r["limit"]) for r in rows),
        }
        for name, rows in groups.items()
    }


def storm_sides(
    scenario: Scenario, summary: dict[str, Any], storm: dict[str, Any]
) -> dict[str, Any]:
    """What a run with a storm adds to its summary: the storm (wrk's report), both
    populations side by side, and the server's view before, during and after it."""
    client = summary["client_side"]
    polite_ok = client["requests"] - client["shed"] - client["failures"]
    return {
        "storm": storm,
        "populations": {
            "polite": {
                "generator": "locust",
                "note": "client-side, Locust users who honour Retry-After",
                "users": client["users_peak"],
                "requests": client["requests"],
                "ok": max(0, polite_ok),
                "shed": client["shed"],
                "failures": client["failures"],
                "requests_per_s": client["rps_mean"],
                "p50_ms": client["p50_ms"],
                "p99_ms": client["p99_ms"],
            },
            "storm": {
                "generator": "wrk",
                "note": storm["note"],
                "connections": storm["connections"],
                "requests": storm["requests"],
                "ok": storm["ok"],
                "non_2xx_3xx": storm["non_2xx_3xx"],
                "requests_per_s": storm["requests_per_s"],
                "p50_ms": storm["latency_ms"].get("p50"),
                "p99_ms": storm["latency_ms"].get("p99"),
            },
        },
        "server_by_phase": by_phase(scenario, summary["windows"]),
    }
