"""What the composition root hands from one app to another, so that no app imports
another: the apps state what they need, and only this place knows who provides it."""

from __future__ import annotations

from surgeguard_controller.drills.drill import ScenarioInfo, Scenarios
from surgeguard_loadtest.scenarios import MAX_USERS, SCENARIOS, defaults


def drill_scenarios() -> Scenarios:
    """The load tests' scenarios a controller's drill may run (the ones Locust runs
    alone), with their default sizes and the most users they take."""
    return {name: ScenarioInfo(*defaults(name), max_users=MAX_USERS) for name in SCENARIOS}
