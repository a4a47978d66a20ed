"""Issue 16: a controller that knows when it is not obeyed or not working, over real
HTTP (real uvicorn, real Redis, real target replicas).

What a new operator saw: pointed at a replica that did not read the control plane, the
controller logged ``queue_limit 40 -> 11 ... applied True`` forever; a controller whose
every tick failed still answered ``/api/v1/state`` with 200 and a stale
``last_tick_at``."""

from __future__ import annotations

import re
from typing import Any

import httpx

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller.decide import Decider, TickResult
from tests.controller.conftest import StartController
from tests.support.polling import until_truthy
from tests.target_app.conftest import StartTarget

NOT_APPLIED = "(replica does not apply the control plane: not applied)"


def _metric(url: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"(?m)^{name}" + (rf"\{{{re.escape(wanted)}\}}" if wanted else "") + r" (\S+)$"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def test_a_replica_that_does_not_read_the_control_plane_is_flagged_and_not_obeyed(
    start_target: StartTarget,
    start_controller: StartController,
    redis_server: EmbeddedRedis,
) -> None:
    """Two real replicas; one reads its control plane from another Redis database, so
    it never sees what the controller publishes. Everything is "too slow" (SLO 0.1 ms),
    so every tick cuts both."""
    obeys = start_target(replica_id="obeys", concurrency_limit=40)
    ignores = start_target(
        replica_id="ignores", concurrency_limit=40, redis_url=f"{redis_server.url}/3"
    )
    # Without the hold rule, which would give up cutting a limit that does not help, and
    # without the loop-lag hold (cpu_saturated=0), which on a busy machine holds the
    # limit for the test servers' own loop lag.
    ctl = start_controller(
        [obeys.url, ignores.url],
        slo_s=0.0001,
        cooldown_s=0.0,
        hold_rule=False,
        cpu_saturated=0,
    )
    ticks = 0
    with httpx.Client(timeout=10) as client:

        def tick() -> dict[str, Any]:
            for _ in range(10):
                client.get(f"{obeys.url}/ping")
                client.get(f"{ignores.url}/ping")
            ctl.tick()
            state: dict[str, Any] = client.get(f"{ctl.url}/api/v1/state").json()
            return state

        state = tick()
        while state["replicas"]["ignores"]["obeying"]:
            ticks += 1
            assert ticks <= 6, "the replica that ignores the control plane was not flagged"
            state = tick()
        state = tick()  # one more tick, decided while it is known not to obey
        decisions = client.get(f"{ctl.url}/api/v1/decisions", params={"limit": 500}).json()
        history = client.get(f"{ctl.url}/api/v1/history", params={"seconds": 60}).json()

    bad, good = state["replicas"]["ignores"], state["replicas"]["obeys"]
    assert bad["obeying"] is False
    assert bad["applied_version"] == 0  # its own (empty) control plane
    assert bad["published_version"] >= 1
    assert bad["disobeying_since"] > 0
    assert good["obeying"] is True and good["disobeying_since"] is None
    assert good["applied_version"] == good["published_version"] >= 1

    since = bad["disobeying_since"]
    after = [d for d in decisions if d["replica"] == "ignores" and d["at"] >= since]
    assert after, "no decision for the flagged replica"
    assert all(not d["applied"] and d["reason"].endswith(NOT_APPLIED) for d in after), after
    assert state["last_change"] is not None and "knob" in state["last_change"]
    # It enforces what it started with; the replica that obeys was cut.
    # (The obeying replica applies the published document a moment later: its watcher
    # hears of it by pub/sub, or polls.)
    until_truthy(lambda: obeys.service.limiter.limit < 40, 10.0, "the obeying replica's cut")
    assert ignores.service.limiter.limit == 40
    assert history[-1]["replicas"]["ignores"]["obeying"] is False
    assert _metric(ctl.url, "surgeguard_controller_replica_obeying", replica="ignores") == 0
    assert _metric(ctl.url, "surgeguard_controller_replica_obeying", replica="obeys") == 1


class Exploding(Decider):
    """A decider that raises while ``exploding``: every tick after the first (which
    only sets the baseline) fails."""

    exploding = True

    def decide(self, *args: Any, **kwargs: Any) -> TickResult:
        if self.exploding:
            raise RuntimeError("the decider exploded")
        return super().decide(*args, **kwargs)


def test_failing_ticks_show_on_the_state_and_make_readyz_503_until_one_succeeds(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target()
    ctl = start_controller([target.url], run_loop=True, tick_s=0.1, decider=lambda c: Exploding(c))
    with httpx.Client(base_url=ctl.url, timeout=10) as client:

        def failing() -> dict[str, Any] | None:
            tick: dict[str, Any] = client.get("/api/v1/state").json()["tick"]
            return tick if tick["consecutive_failures"] >= 3 else None

        tick = until_truthy(failing, 15.0, "three failed ticks in a row")
        assert tick["ok"] is False
        assert tick["last_error"] == "RuntimeError: the decider exploded"
        assert tick["failures_total"] >= 3 and tick["last_error_at"] > 0
        assert tick["last_ok_at"] is not None  # the first tick (the baseline) worked
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"].endswith("the last: RuntimeError: the decider exploded")
        failures = _metric(ctl.url, "surgeguard_controller_tick_failures_total")
        assert failures is not None and failures >= 3

        decider = ctl.controller.decider
        assert isinstance(decider, Exploding)
        decider.exploding = False
        until_truthy(lambda: client.get("/readyz").status_code == 200, 15.0, "ready again")
        tick = client.get("/api/v1/state").json()["tick"]
    assert tick["ok"] is True and tick["consecutive_failures"] == 0
    assert tick["failures_total"] >= 3
    assert tick["last_error"] == "RuntimeError: the decider exploded"  # kept, with its time


def test_readyz_waits_for_a_first_good_tick_after_the_start_up_grace(
    start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url], ready_grace_s=0.0)
    not_yet = httpx.get(f"{ctl.url}/readyz", timeout=10)
    assert not_yet.status_code == 503
    assert "no control tick has succeeded" in not_yet.json()["reason"]
    ctl.tick()
    ready = httpx.get(f"{ctl.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["tick"]["ok"] is True
