"""The admission benchmark's measurements: load one target with wrk, account the CPU
the server and wrk used meanwhile, and check that every response was what the variant
expects (a rejection run also against the target's own rejection counter)."""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from surgeguard_loadtest.admission.targets import PATH, Target, Variant
from surgeguard_loadtest.wrk import WrkResult, run_wrk, wrk_command

MODE_REJECTIONS = re.compile(
    r'^surgeguard_rejections_total\{[^}]*reason="mode"[^}]*\}\s+(\S+)\s*$', re.MULTILINE
)


# -- checks against the targets -------------------------------------------------------


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0
) -> httpx.Response:
    """GET on loopback, ignoring any proxy set in the environment."""
    return httpx.get(url, headers=headers, timeout=timeout_s, trust_env=False)


def sample_response(target: Target) -> dict[str, Any]:
    """One request as the load will send it: status and the rejection reason header."""
    response = http_get(f"{target.base_url}{PATH}", headers=dict(target.variant.headers))
    return {
        "status": response.status_code,
        "x_surgeguard_reason": response.headers.get("x-surgeguard-reason"),
    }


def mode_rejections(target: Target) -> float:
    """Sum of ``surgeguard_rejections_total{reason="mode"}`` over priorities (requests)."""
    text = http_get(f"{target.base_url}/metrics").text
    return sum(float(value) for value in MODE_REJECTIONS.findall(text))


def check_sample(variant: Variant, sample: Mapping[str, Any]) -> list[str]:
    """Problems with the one request sent before the load (empty: as expected).

    A rejection must be the middleware's own 429 for the active mode, not any 429."""
    problems: list[str] = []
    if sample["status"] != variant.expected_status:
        problems.append(
            f"sample {variant.name}: status {sample['status']}, expected {variant.expected_status}"
        )
    if variant.expected_status == 429 and sample["x_surgeguard_reason"] != "mode":
        problems.append(
            f"sample {variant.name}: X-Surgeguard-Reason {sample['x_surgeguard_reason']!r}, "
            "expected 'mode'"
        )
    return problems


def check_measurement(
    variant: Variant, result: WrkResult, metric_delta: float | None, connections: int
) -> list[str]:
    """Problems with one measurement (empty: it is valid).

    A rejection run must be all non-2xx, and the target's counter must have grown by
    that many, give or take the ``connections`` requests wrk leaves unread at its end."""
    problems: list[str] = []
    if result.socket_error_count:
        problems.append(f"socket errors {result.socket_errors}")
    expected_non_2xx = result.requests if variant.expected_status >= 300 else 0
    if result.non_2xx_3xx != expected_non_2xx:
        problems.append(
            f"{result.non_2xx_3xx} non-2xx/3xx of {result.requests} responses, "
            f"expected {expected_non_2xx}"
        )
    if metric_delta is not None:
        slack = metric_delta - result.non_2xx_3xx
        if not 0 <= slack <= connections:
            problems.append(
                f'rejections_total{{reason="mode"}} grew by {metric_delta:.0f}, '
                f"wrk saw {result.non_2xx_3xx} non-2xx responses"
            )
    return problems


# -- measuring ------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """The knobs of one benchmark run. Durations in seconds."""

    duration_s: float
    rounds: int
    connections: int
    warmup_s: float


@dataclass(frozen=True)
class Measurement:
    """One variant in one round. ``server_cpu_s`` and ``wrk_cpu_s``: CPU seconds the
    target and wrk used during the measurement."""

    variant: str
    wrk: WrkResult
    server_cpu_s: float | None
    wrk_cpu_s: float
    metric_delta: float | None
    problems: list[str]

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per answered request, microseconds: steadier than requests/s on a
        shared machine, since it does not count time the server spent waiting for a core."""
        if self.server_cpu_s is None or not self.wrk.requests:
            return None
        return self.server_cpu_s / self.wrk.requests * 1e6

    @property
    def server_cores(self) -> float | None:
        """Cores the server kept busy (1.0: saturated; below: wrk or other load held it back)."""
        if self.server_cpu_s is None or not self.wrk.duration_s:
            return None
        return self.server_cpu_s / self.wrk.duration_s

    @property
    def wrk_cores(self) -> float:
        """Cores wrk kept busy (near 1.0: the load generator itself was the limit)."""
        return self.wrk_cpu_s / self.wrk.duration_s if self.wrk.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "requests_per_s": self.wrk.requests_per_s,
            "server_cpu_us_per_request": self.cpu_us_per_request,
            "server_cores": self.server_cores,
            "wrk_cores": self.wrk_cores,
            "wrk": asdict(self.wrk),
            "mode_rejections_delta": self.metric_delta,
            "problems": self.problems,
        }


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc is absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of all reaped child processes so far (here: the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(target: Target, config: BenchConfig) -> Measurement:
    """Warm the target up for ``config.warmup_s`` s, then load it for ``duration_s`` s."""
    variant = target.variant
    url = f"{target.base_url}{PATH}"
    if config.warmup_s > 0:
        run_wrk(
            wrk_command(
                url, variant.headers, connections=config.connections, duration_s=config.warmup_s
            ),
            config.warmup_s,
        )
    counted = variant.expected_status == 429
    before = mode_rejections(target) if counted else 0.0
    cpu_before, wrk_before = process_cpu_s(target.process.pid), children_cpu_s()
    result = run_wrk(
        wrk_command(
            url, variant.headers, connections=config.connections, duration_s=config.duration_s
        ),
        config.duration_s,
    )
    cpu_after, wrk_cpu_s = process_cpu_s(target.process.pid), children_cpu_s() - wrk_before
    delta = mode_rejections(target) - before if counted else None
    cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    problems = check_measurement(variant, result, delta, config.connections)
    return Measurement(variant.name, result, cpu_s, wrk_cpu_s, delta, problems)
