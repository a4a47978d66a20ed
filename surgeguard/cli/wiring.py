"""What the composition root hands from one app to another, so that no app imports
another: the apps state what they need, and only this place knows who provides it."""

from __future__ import annotations

import logging

from surgeguard_controller.drills.drill import ScenarioInfo, Scenarios

log = logging.getLogger("surgeguard.cli")


def drill_scenarios() -> Scenarios:
    """The load tests' scenarios a controller's drill may run (the ones Locust runs
    alone), with their default sizes and the most users they take; none where the
    load tests are not installed (a drill runs ``surgeguard load``)."""
    try:
        from surgeguard_loadtest.scenarios import MAX_USERS, SCENARIOS, defaults
    except ImportError as exc:
        log.info("no drills: %s", exc)
        return {}
    return {name: ScenarioInfo(*defaults(name), max_users=MAX_USERS) for name in SCENARIOS}
