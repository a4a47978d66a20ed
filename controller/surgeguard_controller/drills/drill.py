"""Load-test drills: what one is, and how its record moves. Pure: no I/O, no clock.

A drill is one run of a named load-test scenario against the stack. Which scenarios
there are is handed in (``Scenarios``, built by whoever builds the controller from the
load tests' catalogue): the controller does not import the load tests. The controller
runs at most one drill itself (``source="controller"``, see
``surgeguard_controller.drills.runner``); a ``surgeguard load`` started anywhere else
records its start and end through the API (``source="external"``). The records exist
so the dashboard can say what load the service was under, and mark it on its charts.

A record's life: ``running`` -> ``finished`` (exit 0 on its own), ``stopped`` (an
operator, the controller's shutdown or its overrun watchdog stopped it) or ``failed``
(any other exit; ``error`` keeps the last lines of its log). An external record that
never got its end mark reads as ``lost`` once well past its expected end.

A controller drill's chaos (a dependency made slow or failing on purpose) is set
through its drill, and the record keeps what it last set (``chaos``). Whatever ends
the drill (its child killed, the controller stopping or restarting), the controller
puts back what the record still holds (``leftover_chaos``) and clears it from the
record (``chaos_cleared``): drill chaos never outlives its drill.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MIN_USERS = 1
MIN_DURATION_S = 5.0
MAX_DURATION_S = 3_600.0
SOURCES = ("controller", "external")
STATUSES = ("running", "finished", "stopped", "failed", "lost")
# An external run with no end mark this long after its expected end reads as lost
# (its reporter died or never sent the mark): a chart band must not run on forever.
LOST_AFTER_S = 300.0


class DrillError(ValueError):
    """A drill request that cannot be honoured; ``status`` is the HTTP status to answer
    (404 unknown scenario or drill, 409 conflicting state, 422 bad value)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ScenarioInfo:
    """What a drill needs to know of one load-test scenario: the size it runs at when
    not told otherwise (``users`` at most at once, ``duration_s`` seconds for the whole
    run) and the most users it takes."""

    users: int
    duration_s: float
    max_users: int


# The scenarios a drill may run, by name, in the order they are offered.
Scenarios = Mapping[str, ScenarioInfo]


@dataclass(frozen=True)
class DrillSpec:
    """What to run: a scenario, its most users at once, and the whole run in seconds."""

    scenario: str
    users: int
    duration_s: float


def scenario_defaults(scenarios: Scenarios) -> dict[str, dict[str, float]]:
    """Each scenario's default size: {name: {"users": n, "duration_s": seconds}}."""
    return {
        name: {"users": info.users, "duration_s": info.duration_s}
        for name, info in scenarios.items()
    }


def known_scenario(scenario: str, scenarios: Scenarios) -> ScenarioInfo:
    """The scenario's information; ``DrillError`` 404 naming the ones there are."""
    info = scenarios.get(scenario)
    if info is None:
        allowed = ", ".join(scenarios) or "none (no scenarios were given)"
        raise DrillError(f"unknown scenario {scenario!r}: allowed are {allowed}", 404)
    return info


def check(
    scenario: str, users: int | None, duration_s: float | None, *, scenarios: Scenarios
) -> DrillSpec:
    """The spec to run, with the scenario's defaults where None; raises ``DrillError``
    naming the field and its range (404 for an unknown scenario, else 422)."""
    info = known_scenario(scenario, scenarios)
    users = info.users if users is None else users
    duration_s = info.duration_s if duration_s is None else duration_s
    if not MIN_USERS <= users <= info.max_users:
        raise DrillError(f"users must be in [{MIN_USERS}, {info.max_users}], got {users}", 422)
    if not (math.isfinite(duration_s) and MIN_DURATION_S <= duration_s <= MAX_DURATION_S):
        raise DrillError(
            f"duration_s must be in [{MIN_DURATION_S:g}, {MAX_DURATION_S:g}] seconds, "
            f"got {duration_s:g}",
            422,
        )
    return DrillSpec(scenario, users, float(duration_s))


@dataclass(frozen=True)
class Drill:
    """One drill's record, as stored (JSON) and served. Times are unix seconds."""

    id: str
    scenario: str
    users: int | None  # None: an external run that did not say
    duration_s: float | None  # seconds; None: an external run that did not say
    source: str  # "controller" or "external"
    who: str  # who started it (the operator's name)
    reason: str
    started_at: float
    ended_at: float | None = None
    status: str = "running"
    exit_code: int | None = None  # negative: killed by that signal
    out_dir: str | None = None  # where its reports are (controller drills)
    pid: int | None = None  # the load generator's process (controller drills)
    error: str | None = None  # why it failed: the last lines of its log
    stopped_by: str | None = None
    stop_reason: str | None = None
    # Chaos the drill set, by dependency: {"latency_multiplier": x, "error_rate": 0..1}.
    chaos: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "chaos": {d: dict(c) for d, c in self.chaos.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Drill:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def started(
    drill_id: str,
    spec: DrillSpec,
    *,
    who: str,
    reason: str,
    at: float,
    out_dir: Path,
    pid: int,
) -> Drill:
    """The record of a drill the controller has just spawned."""
    return Drill(
        id=drill_id,
        scenario=spec.scenario,
        users=spec.users,
        duration_s=spec.duration_s,
        source="controller",
        who=who,
        reason=reason,
        started_at=at,
        out_dir=str(out_dir),
        pid=pid,
    )


def stop_requested(drill: Drill, *, who: str, reason: str) -> Drill:
    """Who asked it to stop, and why (kept until it has exited)."""
    return replace(drill, stopped_by=who, stop_reason=reason)


def ended(drill: Drill, *, exit_code: int, at: float, log_tail: str = "") -> Drill:
    """The record once its process has exited with ``exit_code`` at ``at``: asked to
    stop -> stopped (whatever the code: SIGTERM and SIGKILL both end it), else 0 ->
    finished, else failed with the last lines of its log."""
    if drill.stopped_by is not None:
        status, error = "stopped", None
    elif exit_code == 0:
        status, error = "finished", None
    else:
        status, error = "failed", log_tail.strip() or f"exited with {exit_code}"
    return replace(drill, status=status, exit_code=exit_code, ended_at=at, error=error)


def orphaned(drill: Drill, *, at: float) -> Drill:
    """A controller drill found running in the records when the controller starts: its
    controller went away mid-run (its child got SIGTERM with it)."""
    return replace(
        drill,
        status="failed",
        ended_at=at,
        error="the controller stopped while this drill ran; its load generator went with it",
    )


CALM_CHAOS: Mapping[str, float] = {"latency_multiplier": 1.0, "error_rate": 0.0}


def with_chaos(drill: Drill, dependency: str, chaos: Mapping[str, float]) -> Drill:
    """The record once the drill has set ``chaos`` on ``dependency`` (calm: put back)."""
    return replace(drill, chaos={**drill.chaos, dependency: dict(chaos)})


def leftover_chaos(drill: Drill) -> dict[str, Mapping[str, float]]:
    """The chaos the drill set and has not put back, by dependency."""
    return {d: c for d, c in drill.chaos.items() if dict(c) != CALM_CHAOS}


def chaos_cleared(drill: Drill) -> Drill:
    """The record once its chaos has been put back."""
    return replace(drill, chaos={d: dict(CALM_CHAOS) for d in drill.chaos})


def external_start(
    drill_id: str,
    scenario: str,
    *,
    users: int | None,
    duration_s: float | None,
    who: str,
    reason: str,
    at: float,
    scenarios: Scenarios,
) -> Drill:
    """The record of a ``surgeguard load`` run started outside the controller; 404 for
    a scenario not among ``scenarios``."""
    known_scenario(scenario, scenarios)
    return Drill(
        id=drill_id,
        scenario=scenario,
        users=users,
        duration_s=duration_s,
        source="external",
        who=who,
        reason=reason,
        started_at=at,
    )


def external_end(drill: Drill, *, at: float) -> Drill:
    if drill.source != "external" or not drill.running:
        raise DrillError(f"drill {drill.id} is not a running external drill", 409)
    return replace(drill, status="finished", ended_at=max(at, drill.started_at))


def settle(drill: Drill, now: float) -> Drill:
    """How a record reads at ``now``: an external run that should have ended long ago
    and never said so is ``lost``, ending at its expected end (never persisted: a late
    end mark still finds it running)."""
    if drill.source != "external" or not drill.running:
        return drill
    expected_end = drill.started_at + (drill.duration_s or MAX_DURATION_S)
    if now <= expected_end + LOST_AFTER_S:
        return drill
    return replace(drill, status="lost", ended_at=expected_end)


def find_open_external(drills: Sequence[Drill], scenario: str) -> Drill | None:
    """The newest running external drill of ``scenario`` (for an end mark with no id)."""
    return next(
        (d for d in drills if d.source == "external" and d.running and d.scenario == scenario),
        None,
    )


def load_command(
    base: Sequence[str],
    spec: DrillSpec,
    *,
    target: str,
    controller_url: str,
    out_dir: Path,
    drill_id: str,
) -> list[str]:
    """``base`` (normally ``python -m surgeguard load``) with the drill's arguments.
    ``--no-marks``: the controller records its own drills; the run's own start/end
    marks would record it a second time, as an external run. ``--drill-id``: the run
    sets its chaos through this drill, so the controller can undo it."""
    return [
        *base,
        "--scenario",
        spec.scenario,
        "--host",
        target,
        "--users",
        str(spec.users),
        "--duration",
        f"{spec.duration_s:g}",
        "--out",
        str(out_dir),
        "--controller",
        controller_url,
        "--no-marks",
        "--drill-id",
        drill_id,
    ]
