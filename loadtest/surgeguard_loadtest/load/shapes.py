"""Locust ``LoadTestShape`` classes, one per scenario of ``surgeguard_loadtest.scenarios``.

Each shape builds its ``Scenario`` from the variables ``LOADTEST_USERS``,
``LOADTEST_DURATION_S`` and ``LOADTEST_BASELINE_USERS`` (unset: the scenario's
defaults) and asks it, every second, how many users there should be. The schedule
itself is pure and lives in ``scenarios.py``; these classes only adapt it to Locust's
clock.
"""

from __future__ import annotations

import os
from typing import ClassVar

from locust import LoadTestShape

from surgeguard_loadtest.scenarios import Scenario, build


def _int_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else None


def _float_env(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


def scenario_from_env(name: str) -> Scenario:
    """The named scenario sized by the ``LOADTEST_*`` variables."""
    return build(
        name,
        _int_env("LOADTEST_USERS"),
        _float_env("LOADTEST_DURATION_S"),
        baseline_users=_int_env("LOADTEST_BASELINE_USERS"),
    )


class ScenarioShape(LoadTestShape):
    """Follows its scenario; ends early once the file named by ``LOADTEST_STOP_FILE``
    exists (how the runner stops a run so that Locust still ends it the normal way and
    writes every report: on SIGTERM it skips the HTML one)."""

    abstract = True
    scenario_name: ClassVar[str]

    def __init__(self, scenario: Scenario | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.scenario = scenario or scenario_from_env(self.scenario_name)
        self.stop_file = os.environ.get("LOADTEST_STOP_FILE") or None

    def tick(self) -> tuple[int, float] | None:
        if self.stop_file is not None and os.path.exists(self.stop_file):
            return None
        return self.scenario.tick(self.get_run_time())  # type: ignore[no-untyped-call]


class SpikeShape(ScenarioShape):
    scenario_name = "spike"


class StepShape(ScenarioShape):
    scenario_name = "step"


class SoakShape(ScenarioShape):
    scenario_name = "soak"


class SlowDependencyShape(ScenarioShape):
    """The users of ``soak``; the db slow-down itself is the runner's job (it owns the
    controller token and puts the db back even if Locust dies)."""

    scenario_name = "slow_dependency"


class RetryStormShape(ScenarioShape):
    scenario_name = "retry_storm"


class SquareShape(ScenarioShape):
    scenario_name = "square"


class StormShape(ScenarioShape):
    """The polite users of a storm run; the wrk storm itself is the runner's job."""

    scenario_name = "storm"


SHAPES: dict[str, type[ScenarioShape]] = {
    cls.scenario_name: cls
    for cls in (
        SpikeShape,
        StepShape,
        SoakShape,
        SlowDependencyShape,
        RetryStormShape,
        SquareShape,
        StormShape,
    )
}
