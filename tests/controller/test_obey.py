"""Issue 16: a controller that knows when it is not obeyed or not working (pure).

Whether a replica follows the published control document (``surgeguard_controller.obey``), what
a disobeyed decision says, and the ticks' health and readiness (``.health``)."""

from __future__ import annotations

from surgeguard_controller.decide import Decider, current_knobs
from surgeguard_controller.health import TickHealth, error_text, readiness
from surgeguard_controller.obey import Obedience, follow
from tests.controller.test_decide import signals


def judge(pairs: list[tuple[int | None, int]], grace: int = 3) -> list[Obedience]:
    """(applied, published) per tick, one second apart from t=100."""
    state: Obedience | None = None
    out = []
    for n, (applied, published) in enumerate(pairs):
        state = follow(state, applied, published, now=100.0 + n, grace_ticks=grace)
        out.append(state)
    return out


def test_a_replica_that_applies_each_version_obeys() -> None:
    assert all(o.obeying for o in judge([(0, 0), (1, 1), (2, 2), (5, 5), (6, 6)]))


def test_a_replica_that_stays_at_its_version_is_flagged_after_the_grace() -> None:
    """The issue's replica, which does not read the control plane: it stays at 0 while
    the controller publishes 1, 2, 3, ..."""
    seen = judge([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)])
    assert [o.obeying for o in seen] == [True, True, True, False, False, False]
    assert [o.stuck_ticks for o in seen] == [0, 1, 2, 3, 4, 5]
    assert [o.since for o in seen] == [None, None, None, 103.0, 103.0, 103.0]
    assert (seen[-1].applied, seen[-1].published) == (0, 5)


def test_a_replica_that_follows_a_tick_late_obeys() -> None:
    """Scraped through a slow Prometheus, it is always one version behind, but moving."""
    assert all(o.obeying for o in judge([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]))


def test_a_replica_that_catches_up_obeys_again() -> None:
    seen = judge([(0, 1), (0, 2), (0, 3), (3, 3), (4, 4)])
    assert [o.obeying for o in seen] == [True, True, False, True, True]
    assert seen[-1].since is None


def test_a_replica_reading_another_control_plane_is_flagged() -> None:
    """Its versions move, but never to ours (it is ahead, on another Redis database)."""
    seen = judge([(40, 2), (41, 2), (42, 3), (43, 3)])
    assert [o.obeying for o in seen] == [True, True, False, False]


def test_a_replica_without_the_version_metric_cannot_be_judged() -> None:
    seen = judge([(None, 1), (None, 2), (None, 3), (None, 4)])
    assert all(o.obeying and o.applied is None for o in seen)


def test_decisions_for_a_replica_that_does_not_obey_are_not_applied() -> None:
    s = signals(p99=0.412)
    result = Decider().decide(s, current_knobs(s), now=0.0, obeyed=False)
    cut = next(d for d in result.decisions if d.knob == "concurrency_limit")
    assert (cut.action, cut.applied) == ("cut", False)
    assert cut.reason.endswith(
        ": concurrency_limit 40 -> 20 (replica does not apply the control plane: not applied)"
    )
    assert all(not d.applied for d in result.decisions)


# -- the ticks' health --------------------------------------------------------------------


def test_failed_ticks_are_counted_with_their_error_and_a_good_one_resets_the_streak() -> None:
    health = TickHealth()
    assert health.ok and health.json()["last_error"] is None
    for n in range(3):
        health = health.failed(error_text(RuntimeError(f"boom {n}")), at=10.0 + n)
    assert health.json() == {
        "ok": False,
        "ticks": 0,
        "failures_total": 3,
        "consecutive_failures": 3,
        "last_error": "RuntimeError: boom 2",
        "last_error_at": 12.0,
        "last_ok_at": None,
    }
    health = health.succeeded(at=13.0)
    assert (health.ok, health.consecutive_failures, health.failures_total) == (True, 0, 3)
    assert (health.last_ok_at, health.last_error) == (13.0, "RuntimeError: boom 2")
    assert error_text(KeyError()) == "KeyError"


def test_not_ready_after_three_failures_in_a_row_or_no_good_tick_after_the_grace() -> None:
    health = TickHealth().succeeded(at=1.0)
    for _ in range(2):
        health = health.failed("RuntimeError: boom", at=2.0)
        assert readiness(health, running_s=60, grace_s=5) is None
    health = health.failed("RuntimeError: boom", at=3.0)
    assert readiness(health, running_s=60, grace_s=5) == (
        "3 control ticks failed in a row; the last: RuntimeError: boom"
    )
    assert readiness(TickHealth(), running_s=4, grace_s=5) is None  # starting up
    assert readiness(TickHealth(), running_s=6, grace_s=5) == (
        "no control tick has succeeded in 6 s since start-up"
    )
