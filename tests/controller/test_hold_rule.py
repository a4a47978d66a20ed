"""Issue 11: a cut needs evidence that the knob causes the latency (pure, fake clock).

The retry storm of issue 11: 14,000 rejections/s left 40 admitted/s, the admitted p99
stayed high because the loop was busy saying no, and the controller cut
concurrency_limit again and again down to 1. These tests feed the decider such
windows by hand and check the numbers it chooses and the reasons it gives."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest

from surgeguard.cli.main import _parser
from surgeguard_controller.decide import ControllerConfig, Decider, Decision, current_knobs
from surgeguard_controller.sensing.signals import Signals
from surgeguard_controller.server import build_controller
from surgeguard_controller.settings import ControllerSettings
from tests.controller.test_decide import dep, signals
from tests.support.clock import FakeClock

# -- the CPU spent on rejections ------------------------------------------------------------

STORM: Mapping[str, object] = {
    "p99": 0.24,
    "limit": 52,
    "peak": 52,
    "admitted_per_s": 40,
    "rejected_per_s": {"client_share": 13_000.0, "queue_full": 1_000.0},
    "loop_lag_p99_s": 0.18,
    "cpu_utilisation": 0.98,  # the replica's own CPU is saturated: by saying no
}


def decide(decider: Decider, s: Signals, now: float, **kw: object) -> dict[str, Decision]:
    result = decider.decide(s, current_knobs(s), now=now, **kw)  # type: ignore[arg-type]
    return {d.knob: d for d in result.decisions}


def test_rejection_work_holds_the_limit_and_the_queue(fake_clock: FakeClock) -> None:
    decider = Decider()
    s = signals(**STORM)
    result = decider.decide(s, current_knobs(s), now=fake_clock())
    d = {d.knob: d for d in result.decisions}
    limit = d["concurrency_limit"]
    assert (limit.old, limit.new, limit.action, limit.applied) == (52, 52, "hold", False)
    assert limit.reason == (
        "p99 240 ms > target 200 ms (SLO 250 ms less 20% headroom), but the CPU is spent "
        "saying no: 14,000 rejections/s vs 40 admitted/s, event-loop lag 180 ms of p99 "
        "240 ms; a smaller limit cannot lower p99; holding 52"
    )
    assert limit.inputs["rejected_per_s"] == pytest.approx(14_000)
    # Little's law on an admitted rate the storm depressed (40/s x 200 ms = 8) would
    # shorten the queue from 20 to 8: not the queue's fault either.
    queue = d["queue_limit"]
    assert (queue.old, queue.new, queue.action) == (20, 20, "hold")
    assert queue.reason == (
        "Little's law: 40 req/s x 200 ms = 8 may wait, but the CPU is spent saying no: "
        "14,000 rejections/s vs 40 admitted/s, event-loop lag 180 ms of p99 240 ms; "
        "a shorter queue cannot lower p99; holding 20"
    )
    assert result.bottleneck.name == "rejection_work"
    assert result.bottleneck.sentence == (
        "rejection work: 14,000 rejections/s vs 40 admitted/s, loop lag 180 ms of p99 "
        "240 ms: the CPU is spent saying no"
    )


def test_rejection_work_never_walks_the_limit_down(fake_clock: FakeClock) -> None:
    decider = Decider()
    s = signals(**STORM)
    for _ in range(60):
        d = decide(decider, s, fake_clock())["concurrency_limit"]
        assert (d.action, d.new) == ("hold", 52), d.reason
        fake_clock.advance(1)


def test_with_the_hold_rule_off_the_storm_cuts_as_before(fake_clock: FakeClock) -> None:
    decider = Decider(ControllerConfig(hold_rule=False))
    s = signals(**STORM)
    result = decider.decide(s, current_knobs(s), now=fake_clock())
    d = {d.knob: d for d in result.decisions}
    # 52 x 200/240, the proportional cut, as the controller did before issue 11.
    assert (d["concurrency_limit"].action, d["concurrency_limit"].new) == ("cut", 43)
    assert d["concurrency_limit"].reason == (
        "p99 240 ms > target 200 ms (SLO 250 ms less 20% headroom): concurrency_limit 52 -> 43"
    )
    assert (d["queue_limit"].action, d["queue_limit"].new) == ("cut", 8)
    assert result.bottleneck.name != "rejection_work"


@pytest.mark.parametrize(
    "change",
    [
        {"rejected_per_s": {"client_share": 900.0}, "admitted_per_s": 40},  # under 1,000/s
        {"rejected_per_s": {"client_share": 3_000.0}, "admitted_per_s": 1_200},  # 2.5x
        {"loop_lag_p99_s": 0.02},  # the loop keeps up: the admitted work is slow
    ],
    ids=["few-rejections", "ratio-under-3x", "no-loop-lag"],
)
def test_without_all_the_evidence_the_limit_is_cut(
    fake_clock: FakeClock, change: dict[str, object]
) -> None:
    s = signals(**{**STORM, **change})
    result = Decider().decide(s, current_knobs(s), now=fake_clock())
    d = {d.knob: d for d in result.decisions}["concurrency_limit"]
    assert (d.action, d.new) == ("cut", 43), d.reason
    assert d.reason.endswith(": concurrency_limit 52 -> 43")
    assert result.bottleneck.name != "rejection_work"


def test_errors_still_cut_during_rejection_work(fake_clock: FakeClock) -> None:
    """5xx among admitted are the limit's own evidence: the cut stands."""
    s = signals(**STORM, server_error_rate=0.2)  # type: ignore[arg-type]
    d = decide(Decider(), s, fake_clock())["concurrency_limit"]
    assert (d.action, d.new) == ("cut", 43), d.reason


# Measured at the start of a storm of 10,000 penalised connections (one replica, one
# second): the door's work is rejections and early returns held, and the lag a request
# carries is several of the loop's lags (one per hop), not one.
STORM_START: Mapping[str, object] = {
    "p99": 0.94,
    "limit": 59,
    "peak": 59,
    "admitted_per_s": 216,
    "rejected_per_s": {"client_share": 3_129.0},
    "penalty_holds_per_s": 3_115.0,
    "loop_lag_p99_s": 0.286,
    "cpu_utilisation": 0.78,
}


def test_a_storms_first_second_of_rejections_and_holds_is_not_cut(fake_clock: FakeClock) -> None:
    d = decide(Decider(), signals(**STORM_START), fake_clock())["concurrency_limit"]
    assert (d.old, d.new, d.action) == (59, 59, "hold")
    assert "3,129 rejections/s + 3,115 held/s vs 216 admitted/s" in d.reason
    assert d.reason.endswith("holding 59")


def test_lag_counted_once_per_request_would_have_cut_it(fake_clock: FakeClock) -> None:
    """The hops are the evidence: with one hop, 286 ms of lag is under half of 940 ms."""
    d = decide(Decider(ControllerConfig(loop_hops=1)), signals(**STORM_START), fake_clock())
    assert d["concurrency_limit"].action == "cut"
    with pytest.raises(ValueError, match=r"loop_hops must be in \[1, 100\], got 0.5"):
        ControllerConfig(loop_hops=0.5)


def test_rejection_thresholds_are_config_and_validated(fake_clock: FakeClock) -> None:
    s = signals(**STORM)
    strict = Decider(ControllerConfig(rejection_ratio=500))  # 14,000 / 40 = 350x
    assert decide(strict, s, fake_clock())["concurrency_limit"].action == "cut"
    with pytest.raises(ValueError, match=r"rejection_ratio must be >= 1 .*got 0.5"):
        ControllerConfig(rejection_ratio=0.5)
    with pytest.raises(ValueError, match="rejection_min_per_s must be >= 0 per second, got -1"):
        ControllerConfig(rejection_min_per_s=-1)
    with pytest.raises(ValueError, match="futile_cuts must be >= 1 cuts, got 0"):
        ControllerConfig(futile_cuts=0)
    with pytest.raises(ValueError, match=r"futile_margin must be in \[0, 1\), got 1.0"):
        ControllerConfig(futile_margin=1.0)
    with pytest.raises(ValueError, match="futile_hold_s must be >= 0 seconds, got -5"):
        ControllerConfig(futile_hold_s=-5)


# -- a dependency's latency measured while the loop lags ------------------------------------


def _with_baseline(decider: Decider, clock: FakeClock) -> None:
    healthy = signals(dependencies={"db": dep(p50=0.01, p99=0.02)})
    decider.decide(healthy, current_knobs(healthy), now=clock())
    clock.advance(1)


def test_a_bulkhead_whose_p99_is_loop_lag_is_not_cut(fake_clock: FakeClock) -> None:
    decider = Decider()
    _with_baseline(decider, fake_clock)
    lagged = signals(
        dependencies={"db": dep(p50=0.08, p99=0.2, util=1.0)},
        loop_lag_p99_s=0.18,
        cpu_utilisation=0.98,
    )
    d = decide(decider, lagged, fake_clock())["bulkhead.db"]
    assert (d.old, d.new, d.action) == (16, 16, "hold")
    assert d.reason == (
        "db p99 200 ms > 3x baseline 30 ms, but 180 ms of it is event-loop lag and without "
        "it 20 ms is within 3x baseline: not db's doing; fewer slots cannot lower it; "
        "holding 16"
    )
    assert d.inputs["p99_s"] == pytest.approx(0.2)


def test_a_bulkhead_is_cut_when_the_dependency_is_the_cause(fake_clock: FakeClock) -> None:
    decider = Decider()
    _with_baseline(decider, fake_clock)
    slow = signals(
        dependencies={"db": dep(p50=0.08, p99=0.2, util=1.0)},
        loop_lag_p99_s=0.01,  # the loop keeps up: the time is spent in the db
        cpu_utilisation=0.4,
    )
    d = decide(decider, slow, fake_clock())["bulkhead.db"]
    assert (d.old, d.new, d.action) == (16, 8, "cut")
    assert d.reason == "db p99 200 ms > 3x baseline 30 ms: bulkhead.db 16 -> 8"


# -- cuts that did not lower the latency ------------------------------------------------------

PLAIN = {"proportional": False, "headroom": 0.0, "cooldown_s": 2.0}


def _run(
    decider: Decider,
    clock: FakeClock,
    p99_at: Mapping[int, float],
    seconds: int,
    *,
    limit: int = 52,
    knob: str = "concurrency_limit",
) -> list[Decision]:
    """One tick a second; the replica enforces what the decider applied; the p99 of
    second ``t`` is ``p99_at`` of the latest key <= t."""
    seen = []
    for t in range(seconds):
        p99 = p99_at[max(k for k in p99_at if k <= t)]
        s = signals(p99=p99, limit=limit, peak=limit)
        d = decide(decider, s, clock())[knob]
        seen.append(d)
        if d.applied:
            limit = d.new
        clock.advance(1)
    return seen


def test_after_cuts_that_did_not_help_the_limit_goes_back(fake_clock: FakeClock) -> None:
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 0.412, 1: 0.410, 3: 0.405}, 6)
    assert [(d.action, d.new) for d in ticks] == [
        ("cut", 46),
        ("hold", 46),  # cooling down
        ("cut", 41),
        ("hold", 41),
        ("grow", 52),  # two cuts, p99 412 -> 405 ms: back
        ("hold", 52),
    ]
    assert ticks[4].reason == (
        "2 cuts 52 -> 41 did not lower p99 (412 ms -> 405 ms): back to 52, no cut for "
        "latency for 30 s: concurrency_limit 41 -> 52"
    )
    assert ticks[4].applied
    assert ticks[5].reason == (
        "p99 405 ms > SLO 250 ms, but cutting concurrency_limit did not lower it: "
        "holding 52 (29 s before it may be cut again)"
    )


def test_latency_that_does_not_respond_never_walks_the_limit_to_its_minimum(
    fake_clock: FakeClock,
) -> None:
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 0.585}, 120)
    limits = [d.new for d in ticks]
    assert min(limits) == 41  # two cuts at most, then back to 52, every time
    holds = [d for d in ticks if d.action == "hold" and "did not lower it" in d.reason]
    assert len(holds) >= 80
    goes_back = [d for d in ticks if d.action == "grow"]
    assert len(goes_back) == 4  # one try every 30 s or so
    assert all(
        d.new == 52 and "did not lower p99 (585 ms -> 585 ms)" in d.reason for d in goes_back
    )


def test_with_the_hold_rule_off_unresponsive_latency_walks_the_limit_down(
    fake_clock: FakeClock,
) -> None:
    decider = Decider(ControllerConfig(**PLAIN, hold_rule=False))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 0.585}, 120)
    assert ticks[-1].new == 1  # today's behaviour: the minimum
    assert "already at the minimum 1" in ticks[-1].reason


def test_cuts_that_lower_the_latency_go_on(fake_clock: FakeClock) -> None:
    """The knob is the cause: each cut lowers the p99, so the controller keeps cutting
    until the p99 is under the SLO, and never goes back."""
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 0.412, 2: 0.36, 4: 0.31, 6: 0.27, 8: 0.2}, 8)
    assert [(d.action, d.new) for d in ticks if d.action != "hold"] == [
        ("cut", 46),
        ("cut", 41),
        ("cut", 36),
        ("cut", 32),
    ]
    assert ticks[6].reason == "p99 270 ms > SLO 250 ms: concurrency_limit 36 -> 32"


def test_latency_still_rising_after_the_first_cut_is_not_yet_futile(
    fake_clock: FakeClock,
) -> None:
    """At the start of a burst the p99 rises after the first cut while traffic still
    arrives (250 -> 742 ms); the second cut lowers it (742 -> 496 ms): the limit is the
    cause, so the cuts go on. (Seen in the end-to-end burst test.)"""
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 0.26, 1: 0.742, 3: 0.496}, 5, limit=100)
    assert [(d.action, d.new) for d in ticks] == [
        ("cut", 90),
        ("hold", 90),
        ("cut", 81),
        ("hold", 81),
        ("cut", 72),
    ]
    assert ticks[4].reason == "p99 496 ms > SLO 250 ms: concurrency_limit 81 -> 72"


def test_a_cut_is_not_judged_before_its_effect_can_show(fake_clock: FakeClock) -> None:
    """Requests waited up to 5 s for the db: a cut's effect shows only once those admitted
    before it are done, so p99 readings 2 s apart say nothing about it and the cuts go
    on; judged after the wait, cuts that did not help still go back. (The end-to-end
    burst test: the first cut was judged futile 2 s after it, mid-burst.)"""
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 5.0}, 8, limit=100)
    moves = [(t, d.action, d.new) for t, d in enumerate(ticks) if d.action != "hold"]
    assert moves[:3] == [(0, "cut", 90), (2, "cut", 81), (4, "cut", 72)]  # too soon to judge
    assert all(action == "cut" for _, action, _ in moves)
    # Readings far enough apart: the same p99 after each cut, so back to where they began.
    decider = Decider(ControllerConfig(**{**PLAIN, "cooldown_s": 7.0}))  # type: ignore[arg-type]
    ticks = _run(decider, fake_clock, {0: 5.0}, 22, limit=100)
    back = [d for d in ticks if d.action == "grow"]
    assert back and back[0].new == 100 and "did not lower p99" in back[0].reason


def test_a_bulkhead_whose_cuts_did_not_help_goes_back(fake_clock: FakeClock) -> None:
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    _with_baseline(decider, fake_clock)
    slots, seen = 16, []
    for _ in range(5):
        s = signals(dependencies={"db": dep(p50=0.08, p99=0.2, util=1.0, limit=slots)})
        d = decide(decider, s, fake_clock())["bulkhead.db"]
        seen.append((d.action, d.new))
        slots = d.new
        fake_clock.advance(1)
    assert seen == [("cut", 14), ("hold", 14), ("cut", 12), ("hold", 12), ("grow", 16)]
    assert d.reason == (
        "2 cuts 16 -> 12 did not lower db p99 (200 ms -> 200 ms): back to 16, no cut for "
        "latency for 30 s: bulkhead.db 12 -> 16"
    )


# -- bulkhead cuts that cost the calls they were to protect ------------------------------------


def _starved(
    decider: Decider,
    clock: FakeClock,
    *,
    seconds: int,
    saturated: bool = False,
    refusing: bool = True,
) -> list[Decision]:
    """A db on a machine short of CPU: its p99 is many times its healthy baseline and
    falls with fewer slots (less contention), but every slot is working: it
    completes 14 calls/s per slot (``saturated``: 150/s whatever the slots, the rest
    queued). The bulkhead turns calls away (``refusing``) once it is cut."""
    slots, seen = 16, []
    for _ in range(seconds):
        calls = 150.0 if saturated else 14.0 * slots
        p99 = 0.06 + 0.01 * slots
        d = dep(
            p50=0.06, p99=p99, util=1.0, limit=slots, calls_per_s=calls,
            rejected_per_s=40.0 if refusing and slots < 16 else 0.0,
        )  # fmt: skip
        decision = decide(decider, signals(dependencies={"db": d}), clock())["bulkhead.db"]
        seen.append(decision)
        if decision.applied:
            slots = decision.new
        clock.advance(1)
    return seen


def test_a_bulkhead_whose_cuts_cost_its_calls_goes_back(fake_clock: FakeClock) -> None:
    """Each cut lowered the db's p99 a little (so they were not futile), and cost calls
    in proportion while the bulkhead refused more: back to 16 and held, not walked to
    one slot (the 10,000-user spike on a starved CPU cut bulkhead.db to 1)."""
    decider = Decider()
    _with_baseline(decider, fake_clock)
    seen = _starved(decider, fake_clock, seconds=40)
    moves = [(d.action, d.new) for d in seen if d.action != "hold"]
    assert moves[:2] == [("cut", 8), ("grow", 16)], moves
    back = next(d for d in seen if d.action == "grow")
    assert back.reason == (
        "cuts 16 -> 8 cost db 50% of its calls (224/s -> 112/s) while it refused more: its "
        "slots were working, not queueing; back to 16, no cut for latency for 30 s: "
        "bulkhead.db 8 -> 16"
    )
    assert min(d.new for d in seen) == 8  # never further down
    held = seen[seen.index(back) + 1]
    assert (held.action, held.new) == ("hold", 16)
    assert "cutting bulkhead.db did not lower it" in held.reason


def test_a_saturated_db_keeps_its_cuts(fake_clock: FakeClock) -> None:
    """The same latency from a db that completes 150 calls/s however many slots it is
    given (the rest queue in it): fewer slots cost nothing, and the cuts stand."""
    decider = Decider()
    _with_baseline(decider, fake_clock)
    seen = _starved(decider, fake_clock, seconds=12, saturated=True)
    assert not [d for d in seen if d.action == "grow" and "cost db" in d.reason]
    assert seen[-1].new <= 4


def test_calls_that_fell_with_the_demand_are_not_the_cuts_doing(fake_clock: FakeClock) -> None:
    """Fewer calls while the bulkhead refuses none: the demand fell, not the slots'
    fault; the cuts are not put back for it."""
    decider = Decider()
    _with_baseline(decider, fake_clock)
    seen = _starved(decider, fake_clock, seconds=12, refusing=False)
    assert not [d for d in seen if "cost db" in d.reason]
    assert seen[-1].new < 8


def test_cuts_not_applied_are_not_judged(fake_clock: FakeClock) -> None:
    """With the autopilot paused the knob never moved: nothing to go back from (the
    Prometheus comparison test watches exactly this: only would-be cuts)."""
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    s = signals(p99=0.5, limit=100, peak=100)
    seen = []
    for _ in range(12):
        seen.append(decide(decider, s, fake_clock(), autopilot=False)["concurrency_limit"])
        fake_clock.advance(1)
    assert {d.action for d in seen} == {"cut", "hold"}  # never "grow": nothing to go back from
    cuts = [d for d in seen if d.action == "cut"]
    assert len(cuts) == 6 and all(d.new == 90 and not d.applied for d in cuts)
    assert all(d.reason.endswith("(autopilot paused: would have done this)") for d in cuts)


def test_a_knob_moved_by_an_operator_starts_a_new_story(fake_clock: FakeClock) -> None:
    decider = Decider(ControllerConfig(**PLAIN))  # type: ignore[arg-type]
    _run(decider, fake_clock, {0: 0.412}, 4)  # two cuts: 52 -> 41
    # The operator sets 80; the p99 is unchanged: no going back to 52 from there.
    s = signals(p99=0.412, limit=80, peak=80)
    d = decide(decider, s, fake_clock())["concurrency_limit"]
    assert (d.action, d.new) == ("cut", 72), d.reason


# -- the switch -----------------------------------------------------------------------------


def test_the_hold_rule_switch_reaches_the_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parser().parse_args(["controller", "--no-hold-rule"]).hold_rule is False
    assert _parser().parse_args(["controller"]).hold_rule is None  # the setting decides
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_HOLD_RULE", "false")
    assert ControllerSettings().controller_hold_rule is False
    monkeypatch.delenv("SURGEGUARD_CONTROLLER_HOLD_RULE")
    assert ControllerSettings().controller_hold_rule is True

    async def built(hold_rule: bool) -> bool:
        async with httpx.AsyncClient() as http:
            controller = build_controller(
                ControllerSettings(controller_hold_rule=hold_rule),
                "redis://127.0.0.1:1",
                ["http://127.0.0.1:1"],
                http,
            )
            await controller.redis.aclose()
            return controller.config.hold_rule

    assert asyncio.run(built(False)) is False
    assert asyncio.run(built(True)) is True
