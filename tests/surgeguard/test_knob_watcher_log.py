"""What the knob watcher says when a control document arrives (issue 16): one line for a
change of what the replica enforces, saying what changed; nothing at INFO for a
republished document that changes nothing. Pure: documents in, sentences out."""

from __future__ import annotations

from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlState
from surgeguard.knob_watcher import Enforced, describe_change
from surgeguard.knobs import Knobs
from surgeguard_target_app.declaration import DEMO

INITIAL = Knobs.build({"concurrency_limit": 64})


def _enforced(state: ControlState, replica: str = "r1") -> Enforced:
    return Enforced.of(state, replica, INITIAL, frozenset(), DEMO.all_modes)


def test_a_knob_and_a_mode_change_read_as_one_sentence() -> None:
    before = _enforced(ControlState(version=122))
    after = _enforced(
        ControlState(
            version=123,
            replicas={"r1": {"concurrency_limit": 52}},
            modes=frozenset({"read_only"}),
        )
    )
    assert describe_change(before, after) == "concurrency_limit 64 -> 52, modes +read_only"


def test_the_same_document_republished_is_no_change() -> None:
    doc = ControlState(version=5, knobs={"queue_limit": 11}, modes=frozenset({"serve_stale"}))
    again = ControlState(version=6, knobs={"queue_limit": 11}, modes=frozenset({"serve_stale"}))
    assert describe_change(_enforced(doc), _enforced(again)) == ""


def test_another_replicas_knobs_are_not_this_replicas_news() -> None:
    before = _enforced(ControlState(version=1))
    after = _enforced(ControlState(version=2, replicas={"r2": {"concurrency_limit": 9}}))
    assert describe_change(before, after) == ""


def test_modes_off_and_chaos_are_said() -> None:
    before = _enforced(ControlState(version=1, modes=frozenset({"shed_sheddable"})))
    after = _enforced(ControlState(version=2, chaos={"db": Chaos(3.0, 0.1)}))
    assert describe_change(before, after) == (
        "modes -shed_sheddable, chaos db latency x1 -> x3 errors 0% -> 10%"
    )
    assert describe_change(after, before) == (
        "modes +shed_sheddable, chaos db latency x3 -> x1 errors 10% -> 0%"
    )


def test_before_any_document_the_start_up_modes_are_enforced() -> None:
    modes = frozenset({"read_only"})
    assert Enforced.of(ControlState(version=0), "r1", INITIAL, modes).modes == {"read_only"}
    assert Enforced.of(ControlState(version=3), "r1", INITIAL, modes).modes == frozenset()
