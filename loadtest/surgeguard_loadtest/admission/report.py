"""The admission benchmark's report: the goal ratios, medians over the rounds, the
JSON document and the table printed at the end."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from surgeguard_loadtest.admission.measure import BenchConfig, check_sample
from surgeguard_loadtest.admission.targets import (
    ADMISSION_OFF,
    ADMISSION_ON,
    PATH,
    REJECTION,
    VARIANTS,
    Target,
)
from surgeguard_loadtest.wrk import wrk_version

STARVED_CORES = 0.9  # a measurement whose server got less than this had CPU stolen
GOALS: dict[str, float] = {"admission_on_vs_off": 0.93, "rejection_vs_admitted": 2.5}


# -- ratios and medians ---------------------------------------------------------------


def ratios(rps: Mapping[str, float]) -> dict[str, float]:
    """The two goal ratios from requests/s per variant name."""
    return {
        "admission_on_vs_off": rps[ADMISSION_ON.name] / rps[ADMISSION_OFF.name],
        "rejection_vs_admitted": rps[REJECTION.name] / rps[ADMISSION_ON.name],
    }


def cpu_ratios(cpu_us: Mapping[str, float | None]) -> dict[str, float] | None:
    """The goal ratios as a saturated server with a core of its own would show them:
    from server CPU microseconds per request (the cheaper variant serves more)."""
    on, off, rejection = (cpu_us[v.name] for v in VARIANTS)
    if on is None or off is None or rejection is None:
        return None
    return ratios(
        {ADMISSION_ON.name: 1 / on, ADMISSION_OFF.name: 1 / off, REJECTION.name: 1 / rejection}
    )


def summarize(rounds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Median requests/s per variant over the rounds, and the ratios of those medians."""
    medians = {
        v.name: statistics.median(r["requests_per_s"][v.name] for r in rounds) for v in VARIANTS
    }
    return medians, ratios(medians)


def median_measured(rounds: Sequence[Mapping[str, Any]], key: str) -> dict[str, float | None]:
    """Median of measurement field ``key`` per variant name (None when never measured)."""
    values: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
    for r in rounds:
        for m in r["measurements"]:
            if m[key] is not None:
                values[m["variant"]].append(m[key])
    return {name: statistics.median(vs) if vs else None for name, vs in values.items()}


# -- the JSON document ----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version(),
    }


def build_report(
    command: str,
    config: BenchConfig,
    targets: Sequence[Target],
    samples: Mapping[str, Mapping[str, Any]],
    rounds: list[dict[str, Any]],
) -> dict[str, Any]:
    """The JSON document (see ``surgeguard_loadtest.admission.bench`` for what each part means)."""
    medians, med_ratios = summarize(rounds)
    cpu_us = median_measured(rounds, "server_cpu_us_per_request")
    problems = [
        f"round {r['round']} {m['variant']}: {p}"
        for r in rounds
        for m in r["measurements"]
        for p in m["problems"]
    ]
    for target in targets:
        problems += check_sample(target.variant, samples[target.variant.name])
    return {
        "command": command,
        "config": asdict(config) | {"threads": 1, "path": PATH},
        "rounds": rounds,
        "median_rps": medians,
        "median_server_cpu_us_per_request": cpu_us,
        "ratios_from_server_cpu": cpu_ratios(cpu_us),
        "median_server_cores": median_measured(rounds, "server_cores"),
        "median_wrk_cores": median_measured(rounds, "wrk_cores"),
        "ratios": med_ratios,
        "goals": GOALS,
        "goals_met": {n: med_ratios[n] >= g for n, g in GOALS.items()},
        "problems": problems,
        "targets": {
            t.variant.name: {
                "description": t.variant.description,
                "argv": t.argv[1:],
                "port": t.port,
                "headers": dict(t.variant.headers),
                "expected_status": t.variant.expected_status,
                "sample": dict(samples[t.variant.name]),
            }
            for t in targets
        },
        "machine": machine_info(),
    }


# -- the table ------------------------------------------------------------------------


def format_table(report: Mapping[str, Any]) -> str:
    """The human-readable summary: per-round requests/s, medians, ratios vs goals."""
    names = [v.name for v in VARIANTS]
    ratio_names = list(GOALS)
    head = f"{'round':>6} " + "".join(f"{n:>15}" for n in names)
    head += "".join(f"{n:>24}" for n in ratio_names)
    lines = ["requests/s (wrk -t1), one uvicorn worker per target", head, "-" * len(head)]
    for r in report["rounds"]:
        row = f"{r['round']:>6} " + "".join(f"{r['requests_per_s'][n]:>15,.0f}" for n in names)
        lines.append(row + "".join(f"{r['ratios'][n]:>24.3f}" for n in ratio_names))
    lines.append("-" * len(head))
    medians, med_ratios = report["median_rps"], report["ratios"]
    lines.append(
        f"{'median':>6} "
        + "".join(f"{medians[n]:>15,.0f}" for n in names)
        + "".join(f"{med_ratios[n]:>24.3f}" for n in ratio_names)
    )
    for label, key, fmt in (
        ("server CPU per request, us (median)", "median_server_cpu_us_per_request", ".1f"),
        ("server cores busy (median)", "median_server_cores", ".2f"),
        ("wrk cores busy (median)", "median_wrk_cores", ".2f"),
    ):
        values = report[key]
        cells = "".join(
            f"{'-' if values[n] is None else format(values[n], fmt):>15}" for n in names
        )
        lines.append(f"{'':>6} {cells}  {label}")
    lines.append("")
    from_cpu = report.get("ratios_from_server_cpu")
    for name, goal in GOALS.items():
        verdict = "PASS" if med_ratios[name] >= goal else "MISS"
        line = f"{name:<24} {med_ratios[name]:6.3f}  (goal >= {goal})  {verdict}"
        if from_cpu is not None:
            line += f"   from server CPU/request: {from_cpu[name]:.3f}"
        lines.append(line)
    lines.extend(starvation_notes(report["rounds"]))
    problems = report["problems"]
    lines.append("checks: " + ("all passed" if not problems else f"{len(problems)} FAILED"))
    lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)


def starvation_notes(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines naming the measurements whose server got under ``STARVED_CORES`` of a core,
    split by the likely cause: wrk saturated its own core, or other load on the machine."""
    by_cause: dict[str, list[str]] = {"wrk": [], "other": []}
    for r in rounds:
        for m in r["measurements"]:
            if m["server_cores"] is not None and m["server_cores"] < STARVED_CORES:
                cause = "wrk" if m["wrk_cores"] >= STARVED_CORES else "other"
                by_cause[cause].append(f"{m['variant']}@{r['round']}")
    why = {
        "wrk": "wrk kept its own core busy: the load generator was the limit",
        "other": "other load on the machine took CPU: requests/s are noisy there, "
        "CPU per request much less so",
    }
    return [
        f"note: server under {STARVED_CORES} of a core in {', '.join(names)}: {why[cause]}"
        for cause, names in by_cause.items()
        if names
    ]
