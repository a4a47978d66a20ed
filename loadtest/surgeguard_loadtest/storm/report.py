"""The storm benchmark's verdicts and its report: each configuration's headline figures,
the issue's targets marked met / NOT met, the guarded/unguarded ratios, ``report.md``.

Pure functions over the phase summaries of ``storm_measure.py``. A target without
data (a phase that produced no scrape, say) is NOT met: it was not shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STORM_GOODPUT_GOALS = (0.8, 0.7)  # of polite goodput: the small storm, the large one
HEALTHZ_P99_GOAL_MS = 200.0
SCRAPE_GOAL_S = 1.0
LEGIT_GOAL = 0.9  # of the legitimate client's goodput alone


def _ratio(part: float | None, whole: float | None, digits: int = 3) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return round(part / whole, digits)


def headline(phases: Mapping[str, dict[str, Any]], storms: Sequence[str]) -> dict[str, Any]:
    """One configuration's figures: polite goodput, each storm's goodput and its ratio
    to polite, the legitimate client's ratio (with the attacker / alone), the memory
    the large storm cost."""
    polite = phases["polite"]["server"]["goodput_per_s"]
    legit_alone = phases["alone"]["clients"]["legit"]["ok_per_s"]
    legit_attacked = phases["attacker"]["clients"]["legit"]["ok_per_s"]
    return {
        "polite_goodput_per_s": polite,
        "storms": {
            name: {
                "connections": phases[name]["connections"],
                "goodput_per_s": phases[name]["server"]["goodput_per_s"],
                "ratio_to_polite": _ratio(phases[name]["server"]["goodput_per_s"], polite),
                "healthz_p99_ms": phases[name]["healthz"]["p99_ms"],
                "healthz_max_ms": phases[name]["healthz"]["max_ms"],
                "healthz_service_port_p99_ms": phases[name]["healthz_service_port"]["p99_ms"],
                "metrics_scrape_max_s": phases[name]["metrics_scrape"]["max_s"],
                "limit_min": phases[name]["limit_min"],
                "held_max": phases[name]["held_max"],
                "rss_delta_mb": phases[name]["rss_delta_mb"],
            }
            for name in storms
        },
        "legit_ok_per_s": {"alone": legit_alone, "with_attacker": legit_attacked},
        "legit_ratio": _ratio(legit_attacked, legit_alone),
        "memory_cost_mb": phases[storms[-1]]["rss_delta_mb"],
    }


def _target(goal: str, value: Any, met: bool) -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": bool(met) and value is not None}


def targets(
    head: dict[str, Any], phases: Mapping[str, dict[str, Any]], limit_minimum: int
) -> dict[str, dict[str, Any]]:
    """The issue's targets for one configuration, each with its value and met."""
    storms = list(head["storms"])
    out: dict[str, dict[str, Any]] = {}
    for name, goal in zip(storms, STORM_GOODPUT_GOALS, strict=False):
        storm = head["storms"][name]
        ratio = storm["ratio_to_polite"]
        out[f"{name}_goodput"] = _target(
            f"storm goodput >= {goal} of polite at {storm['connections']:,} connections",
            ratio,
            ratio is not None and ratio >= goal,
        )
    p99s = [phases[n]["healthz"]["p99_ms"] for n in storms]
    worst_p99 = None if None in p99s else max(p99s)
    out["healthz_p99"] = _target(
        f"/healthz p99 < {HEALTHZ_P99_GOAL_MS:g} ms during every storm "
        "(health port, new connection per probe)",
        worst_p99,
        worst_p99 is not None and worst_p99 < HEALTHZ_P99_GOAL_MS,
    )
    scrapes = [phases[n]["metrics_scrape"] for n in storms]
    slowest = None if any(s["max_s"] is None for s in scrapes) else max(s["max_s"] for s in scrapes)
    failed = sum(s["failed"] for s in scrapes)
    out["metrics_scrape"] = _target(
        f"every /metrics scrape < {SCRAPE_GOAL_S:g} s during every storm (none failed)",
        slowest,
        slowest is not None and slowest < SCRAPE_GOAL_S and failed == 0,
    )
    lows = [phases[n]["limit_min"] for n in storms]
    lowest = None if None in lows else min(lows)
    out["limit_above_minimum"] = _target(
        f"concurrency_limit never at its minimum ({limit_minimum}) during the storms",
        lowest,
        lowest is not None and lowest > limit_minimum,
    )
    out["legit_goodput"] = _target(
        f"legitimate client keeps >= {LEGIT_GOAL} of its goodput alone next to a keyless "
        "attacker claiming critical",
        head["legit_ratio"],
        head["legit_ratio"] is not None and head["legit_ratio"] >= LEGIT_GOAL,
    )
    return out


def comparison(guarded: dict[str, Any], unguarded: dict[str, Any]) -> dict[str, Any]:
    """Guarded over unguarded: goodput in each storm and the legitimate client's ratio
    (> 1: the guard helps); /healthz p99 in each storm (< 1: the guard helps). None
    where the unguarded figure is 0 or missing."""
    out: dict[str, Any] = {}
    for name, g in guarded["storms"].items():
        u = unguarded["storms"][name]
        out[f"{name}_goodput"] = _ratio(g["goodput_per_s"], u["goodput_per_s"], 2)
        out[f"{name}_healthz_p99"] = _ratio(g["healthz_p99_ms"], u["healthz_p99_ms"], 2)
    out["legit_ratio"] = _ratio(guarded["legit_ratio"], unguarded["legit_ratio"], 2)
    return out


# -- the report ----------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" for k, v in value.items()) or "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _phase_row(name: str, p: dict[str, Any]) -> list[Any]:
    server = p["server"]
    return [
        name,
        server["goodput_per_s"],
        server.get("admitted_per_s"),
        server.get("rejected"),
        p["healthz"]["p99_ms"],
        p["healthz"]["max_ms"],
        p["healthz_service_port"]["p99_ms"],
        p["metrics_scrape"]["max_s"],
        p["limit_min"],
        p["held_max"],
        p["rss_delta_mb"],
    ]


PHASE_HEADS = (
    "phase",
    "goodput/s",
    "admitted/s",
    "rejected",
    "healthz p99 ms",
    "healthz max ms",
    "service-port healthz p99 ms",
    "scrape max s",
    "limit min",
    "held max",
    "RSS +MB",
)


def _phase_table(phases: Mapping[str, dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(PHASE_HEADS) + " |", "|" + "---|" * len(PHASE_HEADS)]
    for name, phase in phases.items():
        lines.append("| " + " | ".join(_cell(c) for c in _phase_row(name, phase)) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: the command, the targets, the ratios, then each configuration."""
    configs: dict[str, Any] = report["configurations"]
    names = list(configs)
    first = configs[names[0]]
    lines = [
        "# Storm benchmark",
        "",
        f"Command: `{report['command']}` ({report['seconds']:g} s in all).",
        "",
        "One replica with its controller, default settings, the same run for each "
        "configuration: " + "; ".join(f"**{n}** ({configs[n]['about']})" for n in names) + ".",
        "Goodput: admitted, ok and within the SLO "
        f"({report['slo_p99_ms']:g} ms), from the replica's own /metrics. /healthz is "
        "probed every 0.25 s on a new connection each time, as a liveness probe does: on "
        "the replica's health port (judged) and on its service port (behind the storm's "
        "connections in the accept queue).",
        "",
        "## Targets",
        "",
        "| target | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, target in first["targets"].items():
        cells = []
        for n in names:
            t = configs[n]["targets"][key]
            cells.append(f"{'met' if t['met'] else 'NOT met'} ({_cell(t['value'])})")
        lines.append(f"| {target['goal']} | " + " | ".join(cells) + " |")
    verdicts = [f"- **{n}** {v['line']}" for n in names for v in configs[n].get("verdicts") or ()]
    if verdicts:
        lines += ["", "## Verdicts per phase (the polite phase is the baseline)", "", *verdicts]
    lines += ["", "## Guarded / unguarded", ""]
    lines += [f"- {k}: {_cell(v)}" for k, v in report["guarded_over_unguarded"].items()]
    for n in names:
        head = configs[n]["headline"]
        lines += [
            "",
            f"## {n}",
            "",
            f"Polite goodput {_cell(head['polite_goodput_per_s'])}/s; legitimate client "
            f"{_cell(head['legit_ok_per_s']['alone'])} ok/s alone, "
            f"{_cell(head['legit_ok_per_s']['with_attacker'])} ok/s with the attacker "
            f"(ratio {_cell(head['legit_ratio'])}); memory of the largest storm "
            f"{_cell(head['memory_cost_mb'])} MB over idle "
            f"({_cell(configs[n]['idle_rss_mb'])} MB).",
            "",
            *_phase_table(configs[n]["phases"]),
        ]
    return "\n".join(lines) + "\n"


def table(report: dict[str, Any]) -> str:
    """The terminal's version: one line per configuration and storm."""
    lines = []
    for name, config in report["configurations"].items():
        head = config["headline"]
        met = sum(1 for t in config["targets"].values() if t["met"])
        lines.append(
            f"{name}: polite {_cell(head['polite_goodput_per_s'])}/s, legit ratio "
            f"{_cell(head['legit_ratio'])}, targets met {met}/{len(config['targets'])}"
        )
        for storm, s in head["storms"].items():
            lines.append(
                f"  {storm}: goodput {_cell(s['goodput_per_s'])}/s "
                f"(x{_cell(s['ratio_to_polite'])} of polite), healthz p99 "
                f"{_cell(s['healthz_p99_ms'])} ms max {_cell(s['healthz_max_ms'])} ms, "
                f"scrape max {_cell(s['metrics_scrape_max_s'])} s, limit min "
                f"{_cell(s['limit_min'])}, held max {_cell(s['held_max'])}, "
                f"RSS +{_cell(s['rss_delta_mb'])} MB"
            )
    return "\n".join(lines)
