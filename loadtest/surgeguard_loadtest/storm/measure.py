"""The storm benchmark's numbers: one phase of a run, read from what was recorded.

Pure functions over the replica's own scrapes (the truth: goodput within the SLO,
admitted and rejected by reason, the limit, the penalty box, memory), the watchers'
timed probes (``/healthz`` and ``/metrics`` answer times) and the wrk clients'
reports. Times in the inputs are monotonic seconds; outputs use ms for latencies,
MB for memory and per-second rates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surgeguard.metric_names import PENALTY_BOX_HELD as PENALTY_HELD
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import compute
from surgeguard_loadtest.load.watch import ms_or_none
from surgeguard_loadtest.storm.watch import Probe
from surgeguard_loadtest.wrk import WrkResult

SLO_S = 0.25
RSS = "process_resident_memory_bytes"


@dataclass(frozen=True)
class Phase:
    """One part of a configuration's run: ``start``/``end`` monotonic seconds, and
    what each of its wrk clients reported (or the error that stopped it)."""

    name: str
    kind: str  # idle, polite, alone, attacker, storm
    start: float
    end: float
    clients: Mapping[str, WrkResult | str] = field(default_factory=dict)
    connections: int = 0  # the storm's (storms only)


def _span(scrapes: Sequence[Scrape], start: float, end: float) -> list[Scrape]:
    """The scrapes that frame the phase: those inside it, or (fewer than two inside:
    a replica too busy to answer often) the last one before it and the first after."""
    inside = [s for s in scrapes if start <= s.at <= end]
    if len(inside) >= 2:
        return inside
    before = [s for s in scrapes if s.at < start][-1:]
    after = [s for s in scrapes if s.at > end][:1]
    return before + inside + after


def _quantile(values: Sequence[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def server_side(span: Sequence[Scrape], start: float) -> dict[str, Any]:
    """Goodput within the SLO, admitted, rejected by reason over the whole span, and
    one window a second (``at``: the window's end, seconds since the phase started)."""
    if len(span) < 2:
        return {"seconds": 0.0, "goodput_per_s": None, "windows": []}
    whole = compute("phase", span[0], span[-1], slo_s=SLO_S)
    windows = []
    for before, now in itertools.pairwise(span):
        s = compute("window", before, now, slo_s=SLO_S)
        windows.append(
            {
                "at": round(now.at - start, 2),
                "good_per_s": round(s.good_per_s, 1),
                "admitted_per_s": round(s.admitted_per_s, 1),
                "rejected_per_s": {r: round(v, 1) for r, v in s.rejected_per_s.items() if v},
                "limit": s.concurrency_limit,
                "held": s.penalty_held,
                "rss_mb": _mb(now.total(RSS)),
            }
        )
    return {
        "seconds": round(whole.window_s, 2),
        "goodput_per_s": round(whole.good_per_s, 1),
        "admitted_per_s": round(whole.admitted_per_s, 1),
        "rejected_per_s": round(whole.rejected_total_per_s, 1),
        "rejected": {r: round(v * whole.window_s) for r, v in whole.rejected_per_s.items() if v},
        "p99_ms": ms_or_none(whole.p99_s),
        "cpu_cores": _round(whole.cpu_utilisation, 2),
        "windows": windows,
    }


def gauges(span: Sequence[Scrape], idle_rss: float | None) -> dict[str, Any]:
    """The limit's lowest value, the penalty box's most held (None: not exported) and
    memory (the most RSS, and that less ``idle_rss``, bytes, in MB)."""
    limits = [s.total("surgeguard_concurrency_limit") for s in span]
    exported = any(any(name == PENALTY_HELD for name, _ in s.samples) for s in span)
    rss = [s.total(RSS) for s in span if s.total(RSS)]
    rss_max = max(rss, default=None)
    return {
        "limit_start": limits[0] if limits else None,
        "limit_min": min(limits, default=None),
        "limit_end": limits[-1] if limits else None,
        "held_max": max(s.total(PENALTY_HELD) for s in span) if exported and span else None,
        "rss_mb_max": _mb(rss_max),
        "rss_delta_mb": _mb(rss_max - idle_rss) if rss_max and idle_rss else None,
    }


def probes(records: Sequence[Probe], start: float, end: float) -> dict[str, Any]:
    """Probes sent within the phase: how many, how many failed, p50/p99/max in ms."""
    inside = [p for p in records if start <= p.at <= end]
    ms = [p.seconds * 1000 for p in inside]
    return {
        "probes": len(inside),
        "failed": sum(1 for p in inside if not p.ok),
        "p50_ms": _round(_quantile(ms, 0.5)),
        "p99_ms": _round(_quantile(ms, 0.99)),
        "max_ms": _round(max(ms, default=None)),
    }


def client(result: WrkResult | str) -> dict[str, Any]:
    """One wrk client's report; ``ok``: its 2xx (counted by its script when it had
    one, else every answer that was not a non-2xx/3xx)."""
    if isinstance(result, str):
        return {"error": result, "requests": 0, "ok": 0, "ok_per_s": 0.0}
    ok = (
        result.status_2xx if result.status_2xx is not None else result.requests - result.non_2xx_3xx
    )
    return {
        "requests": result.requests,
        "requests_per_s": round(result.requests_per_s, 1),
        "ok": ok,
        "ok_per_s": round(ok / result.duration_s, 1) if result.duration_s else 0.0,
        "non_2xx_3xx": result.non_2xx_3xx,
        "socket_errors": result.socket_errors,
        "latency_ms": {k: round(v, 1) for k, v in result.latency_percentiles_ms.items()},
        "seconds": round(result.duration_s, 2),
    }


def idle_rss(scrapes: Sequence[Scrape], phase: Phase) -> float | None:
    """The replica's median RSS over an idle phase, bytes (None: no scrape)."""
    values = [s.total(RSS) for s in _span(scrapes, phase.start, phase.end) if s.total(RSS)]
    return sorted(values)[len(values) // 2] if values else None


def phase_summary(
    phase: Phase,
    scrapes: Sequence[Scrape],
    scrape_times: Sequence[Probe],
    health: Sequence[Probe],
    health_service_port: Sequence[Probe],
    idle: float | None,
) -> dict[str, Any]:
    """Everything the report says about one phase. ``health``: /healthz probes on the
    replica's health port, a new connection each (a liveness probe's view: the target
    is judged on these); ``health_service_port``: the same on the service port (behind
    the storm's connections in the accept queue)."""
    span = _span(scrapes, phase.start, phase.end)
    out: dict[str, Any] = {"kind": phase.kind, "seconds": round(phase.end - phase.start, 2)}
    if phase.connections:
        out["connections"] = phase.connections
    return {
        **out,
        "server": server_side(span, phase.start),
        **gauges(span, idle),
        "healthz": probes(health, phase.start, phase.end),
        "healthz_service_port": probes(health_service_port, phase.start, phase.end),
        "metrics_scrape": {
            **probes(scrape_times, phase.start, phase.end),
            "max_s": _round(
                max(
                    (p.seconds for p in scrape_times if phase.start <= p.at <= phase.end),
                    default=None,
                ),
                3,
            ),
        },
        "clients": {name: client(r) for name, r in phase.clients.items()},
    }
