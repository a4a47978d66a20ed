"""The load-test scenarios as pure schedules: how many users at each second of a run.

No Locust here (it monkeypatches the standard library with gevent), so the
controller, the dashboard and the tests can read the scenarios safely. Locust's
``LoadTestShape`` classes in ``load/shapes.py`` only ask a ``Scenario`` for its
``tick``.

Every scenario is built from two numbers, ``users`` (the most users at once) and
``duration_s`` (the whole run, seconds), so an operator can scale a rehearsal down to
a laptop or up to 10,000 users without learning each shape's parameters:

- ``spike``: a baseline (2% of ``users``), then all ``users`` within 10 s, held,
  back to the baseline for the last 30% of the run (to watch the limits recover).
- ``step``: a staircase of eight equal steps up to ``users``, to find the knee.
- ``soak``: ``users`` for the whole run after a short ramp (leaks, drift, slow queues).
- ``slow_dependency``: a steady ``users``; half-way the db becomes five times slower
  (through the controller's chaos API) until the run ends.
- ``retry_storm``: like ``spike`` but every user is impatient (asks again at once
  after a 429/503), the traffic pattern of clients with naive retries.
- ``square``: a square wave: a baseline (2% of ``users``) for 5 s, then ``users`` for
  10 s and the baseline for 10 s, repeated until the run ends (a limit that
  oscillates shows here).
- ``storm``: ``users`` polite Locust users for the whole run and, from 20% to 70% of
  it, a ``wrk`` storm of impatient connections that ignore ``Retry-After`` and ask again
  at once (Locust alone cannot make thousands of such connections on two cores). Sized
  by the storm's own options (``surgeguard load --storm-connections``); needs ``wrk``.

``SCENARIOS`` are the ones Locust runs alone (what a drill from the dashboard may
start); ``ALL_SCENARIOS`` adds the ones that also need ``wrk`` on the load machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_USERS = 10_000
MAX_DURATION_S = 3_600.0
MIN_DURATION_S = 5.0
RAMP_S = 10.0  # the "10,000 users within 10 s"
SLOW_DB_MULTIPLIER = 5.0
SQUARE_PRE_S = 5.0  # the square wave's baseline before its first "on"
SQUARE_HALF_S = 10.0  # each "on" and each "off" of the square wave


class ScenarioError(ValueError):
    """A scenario name or size that cannot be run; the message names the problem."""


@dataclass(frozen=True)
class Stage:
    """Until ``until_s`` seconds into the run, hold ``users``, spawning (or stopping)
    ``spawn_rate`` users per second to get there."""

    until_s: float
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class ChaosEvent:
    """At ``at_s`` seconds into the run, multiply ``dependency``'s latency by
    ``latency_multiplier`` (1.0 puts it back)."""

    at_s: float
    dependency: str
    latency_multiplier: float


@dataclass(frozen=True)
class PhaseSpan:
    """A part of a run a verdict is given for: ``start_s`` to ``end_s`` seconds into it."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    users: int
    duration_s: float
    stages: tuple[Stage, ...]
    population: str = "mixed"  # "mixed" (polite and impatient), "impatient" or "polite"
    chaos: tuple[ChaosEvent, ...] = ()
    # (start, end) seconds into the run of the wrk storm; None: no storm
    storm_s: tuple[float, float] | None = None

    def tick(self, run_time_s: float) -> tuple[int, float] | None:
        """(users, spawn rate per second) at ``run_time_s``; None once the run is over
        (Locust then stops the test)."""
        for stage in self.stages:
            if run_time_s < stage.until_s:
                return stage.users, stage.spawn_rate
        return None

    def phase(self, run_time_s: float) -> str:
        """A word for where the run is, for progress lines and reports."""
        if self.name in ("spike", "retry_storm"):
            pre, ramp, hold = (s.until_s for s in self.stages[:3])
            if run_time_s < pre:
                return "baseline"
            if run_time_s < ramp:
                return "ramp"
            return "spike" if run_time_s < hold else "recovery"
        if self.name == "step":
            for number, stage in enumerate(self.stages, start=1):
                if run_time_s < stage.until_s:
                    return f"step {number}/{len(self.stages)}"
            return "done"
        if self.name == "slow_dependency" and self.chaos:
            return "db slow" if run_time_s >= self.chaos[0].at_s else "steady"
        if self.name == "square":
            return next((n for n, _, end in self._square_spans() if run_time_s < end), "done")
        if self.storm_s is not None:
            start, end = self.storm_s
            return "before" if run_time_s < start else "storm" if run_time_s < end else "after"
        return "steady"

    def phase_spans(self) -> tuple[PhaseSpan, ...]:
        """The parts of the run that get a verdict, in order. The first is the
        baseline (what the service did before the load changed) except for ``soak``,
        which is one phase with nothing before it. A spike's ramp is judged with
        neither the baseline nor the hold: it is the change itself."""
        if self.name in ("spike", "retry_storm"):
            pre, ramp, hold = (s.until_s for s in self.stages[:3])
            spans = [("baseline", 0.0, pre), ("spike", ramp, hold), ("recovery", hold, None)]
        elif self.name == "step":
            starts = [0.0, *(s.until_s for s in self.stages[:-1])]
            spans = [
                (f"step {n}/{len(self.stages)}", start, stage.until_s)
                for n, (start, stage) in enumerate(zip(starts, self.stages, strict=True), 1)
            ]
        elif self.name == "slow_dependency" and self.chaos:
            spans = [("steady", 0.0, self.chaos[0].at_s), ("db slow", self.chaos[0].at_s, None)]
        elif self.storm_s is not None:
            start, end = self.storm_s
            spans = [("before", 0.0, start), ("storm", start, end), ("after", end, None)]
        elif self.name == "square":
            spans = [(n, a, b) for n, a, b in self._square_spans()]
        else:
            spans = [("steady", 0.0, None)]
        return tuple(
            PhaseSpan(name, round(a, 2), round(self.duration_s if b is None else b, 2))
            for name, a, b in spans
        )

    def _square_spans(self) -> list[tuple[str, float, float]]:
        """("baseline" | "on N" | "off N", start, end) seconds, from the stages."""
        spans, start, ons = [], 0.0, 0
        for number, stage in enumerate(self.stages):
            if number == 0:
                name = "baseline"
            elif number % 2:
                ons += 1
                name = f"on {ons}"
            else:
                name = f"off {ons}"
            spans.append((name, start, stage.until_s))
            start = stage.until_s
        return spans

    @property
    def baseline_phase(self) -> str | None:
        """The phase the others' goodput is compared with (None: no such phase)."""
        spans = self.phase_spans()
        return spans[0].name if len(spans) > 1 else None


def _rate(delta_users: float, seconds: float) -> float:
    """Spawn rate (users/s) that covers ``delta_users`` within ``seconds``; never 0."""
    return max(1.0, math.ceil(abs(delta_users) / max(seconds, 1e-9)))


def spike_stages(users: int, duration_s: float, baseline: int | None = None) -> tuple[Stage, ...]:
    """Baseline for 20% of the run, up to ``users`` within ``RAMP_S`` (or a tenth of a
    short run), hold until 70%, baseline for the last 30%."""
    base = max(1, round(users * 0.02)) if baseline is None else baseline
    base = min(base, users)
    pre = 0.2 * duration_s
    ramp = min(RAMP_S, 0.1 * duration_s)
    hold_end = 0.7 * duration_s
    up = _rate(users - base, ramp)
    return (
        Stage(pre, base, float(base)),  # everyone of the baseline at once
        Stage(pre + ramp, users, up),
        Stage(hold_end, users, up),
        Stage(duration_s, base, up),  # back down as fast as it came
    )


def square_stages(users: int, duration_s: float, baseline: int | None = None) -> tuple[Stage, ...]:
    """``SQUARE_PRE_S`` of baseline, then ``users`` and the baseline in turn for
    ``SQUARE_HALF_S`` each, each reached within a second, until ``duration_s``."""
    base = min(users, max(1, round(users * 0.02)) if baseline is None else baseline)
    rate = _rate(users - base, 1.0)
    stages = [Stage(min(SQUARE_PRE_S, duration_s), base, float(base))]
    on = True
    while stages[-1].until_s < duration_s:
        until = min(stages[-1].until_s + SQUARE_HALF_S, duration_s)
        stages.append(Stage(until, users if on else base, rate))
        on = not on
    return tuple(stages)


def step_stages(users: int, duration_s: float, steps: int = 8) -> tuple[Stage, ...]:
    """``steps`` equal stairs up to ``users``; each reached within a tenth of its stair."""
    steps = max(1, min(steps, users))
    each = duration_s / steps
    return tuple(
        Stage(
            each * (n + 1),
            round(users * (n + 1) / steps),
            _rate(users / steps, max(1.0, each / 10)),
        )
        for n in range(steps)
    )


def steady_stages(users: int, duration_s: float) -> tuple[Stage, ...]:
    """``users`` after a ramp of a tenth of the run (at most ``RAMP_S``)."""
    return (Stage(duration_s, users, _rate(users, min(RAMP_S, 0.1 * duration_s))),)


@dataclass(frozen=True)
class Defaults:
    users: int
    duration_s: float
    summary: str


DEFAULTS: dict[str, Defaults] = {
    "spike": Defaults(10_000, 110.0, "baseline, all users within 10 s, hold, baseline"),
    "step": Defaults(2_000, 160.0, "eight equal steps up to the users, to find the knee"),
    "soak": Defaults(500, 600.0, "steady users for the whole run"),
    "slow_dependency": Defaults(
        300, 120.0, "steady users; half-way the db becomes 5x slower (chaos API)"
    ),
    "retry_storm": Defaults(3_000, 90.0, "a spike of impatient users who retry at once"),
    "square": Defaults(
        3_000, 85.0, "a square wave: the users for 10 s, the baseline for 10 s, repeated"
    ),
    "storm": Defaults(
        100, 60.0, "polite users throughout; a wrk storm of impatient connections mid-run"
    ),
}
WRK_SCENARIOS: tuple[str, ...] = ("storm",)
ALL_SCENARIOS: tuple[str, ...] = tuple(DEFAULTS)
SCENARIOS: tuple[str, ...] = tuple(n for n in ALL_SCENARIOS if n not in WRK_SCENARIOS)
STORM_FROM, STORM_TO = 0.2, 0.7  # the storm's part of a storm run (the spike's fractions)


def defaults(name: str) -> tuple[int, float]:
    """(users, duration in seconds) a scenario runs with when not told otherwise."""
    _check_name(name)
    d = DEFAULTS[name]
    return d.users, d.duration_s


def _check_name(name: str) -> None:
    if name not in DEFAULTS:
        raise ScenarioError(f"unknown scenario {name!r}: choose from {', '.join(ALL_SCENARIOS)}")


def build(
    name: str,
    users: int | None = None,
    duration_s: float | None = None,
    *,
    baseline_users: int | None = None,
) -> Scenario:
    """The named scenario at the given size (defaults where None). Raises
    ``ScenarioError`` naming the bad value: users in [1, 10000], duration in [5, 3600] s."""
    _check_name(name)
    d = DEFAULTS[name]
    users = d.users if users is None else users
    duration_s = d.duration_s if duration_s is None else duration_s
    if not 1 <= users <= MAX_USERS:
        raise ScenarioError(f"users must be in [1, {MAX_USERS}], got {users}")
    if not (math.isfinite(duration_s) and MIN_DURATION_S <= duration_s <= MAX_DURATION_S):
        raise ScenarioError(
            f"duration must be in [{MIN_DURATION_S:g}, {MAX_DURATION_S:g}] s, got {duration_s:g}"
        )
    builders: dict[str, Callable[[], Scenario]] = {
        "spike": lambda: Scenario(
            name, users, duration_s, spike_stages(users, duration_s, baseline_users)
        ),
        "step": lambda: Scenario(name, users, duration_s, step_stages(users, duration_s)),
        "soak": lambda: Scenario(name, users, duration_s, steady_stages(users, duration_s)),
        "slow_dependency": lambda: Scenario(
            name,
            users,
            duration_s,
            steady_stages(users, duration_s),
            chaos=(ChaosEvent(duration_s / 2, "db", SLOW_DB_MULTIPLIER),),
        ),
        "retry_storm": lambda: Scenario(
            name,
            users,
            duration_s,
            spike_stages(users, duration_s, baseline_users),
            population="impatient",
        ),
        "square": lambda: Scenario(
            name, users, duration_s, square_stages(users, duration_s, baseline_users)
        ),
        "storm": lambda: Scenario(
            name,
            users,
            duration_s,
            steady_stages(users, duration_s),
            population="polite",
            storm_s=(round(STORM_FROM * duration_s, 2), round(STORM_TO * duration_s, 2)),
        ),
    }
    return builders[name]()


def ticks(scenario: Scenario, every_s: float = 1.0) -> Sequence[tuple[float, tuple[int, float]]]:
    """The whole schedule sampled every ``every_s`` seconds: what Locust will be told."""
    out = []
    t = 0.0
    while (step := scenario.tick(t)) is not None:
        out.append((t, step))
        t = round(t + every_s, 9)
    return out
