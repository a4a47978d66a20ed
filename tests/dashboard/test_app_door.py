"""Issue 11: the door as an operator sees it on the dashboard (Streamlit's AppTest) over a
real target and a real controller: clients that ignore Retry-After held in the penalty
box, rejections by reason with their names (unauthorized, duplicate_key, penalty_full),
and the rejection-work bottleneck named."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from surgeguard_controller.bottleneck import Bottleneck, rejection_sentence
from surgeguard_controller.sensing.signals import Signals as ControllerSignals
from tests.dashboard.conftest import APP, Stack, StartController, StartTarget
from tests.support.polling import until

MAX_HELD = 2  # the box's bound: a third early client is answered penalty_full
IMPATIENT = 4  # connections that ask again at once, without a key


class Impatient:
    """``IMPATIENT`` connections, each asking ``/feed`` without a key again and again,
    ignoring the Retry-After of its 401: the penalty box holds them, up to its bound."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(IMPATIENT)]

    def __enter__(self) -> Impatient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        # One connection per thread: the replica names a client by its connection.
        with httpx.Client(base_url=self.url, timeout=40.0, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(client.get("/feed").status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)


def _metric(url: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples on the replica's /metrics (those whose labels
    contain ``label``)."""
    text = httpx.get(f"{url}/metrics", timeout=5.0, trust_env=False).text
    samples = re.findall(rf"(?m)^{name}(\{{[^}}]*\}})? (\S+)$", text)
    return sum(float(value) for labels, value in samples if label in labels)


@pytest.fixture
def stormed(
    start_target: StartTarget,
    start_controller: StartController,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """A replica whose penalty box holds at most ``MAX_HELD``, a controller, and one
    tick whose window saw every door reason and ``MAX_HELD`` requests held."""
    target = start_target(penalty_max_held=MAX_HELD)
    stack = Stack(target, start_controller([target.url]))
    stack.traffic_and_ticks(ticks=1)
    with Impatient(target.url) as impatient:
        two_keys = [("X-Api-Key", "demo-key"), ("X-Api-Key", "other")]
        duplicate = httpx.get(f"{target.url}/feed", headers=two_keys, trust_env=False)
        assert duplicate.status_code == 400

        def box_full() -> bool | None:
            return True if _metric(target.url, "surgeguard_penalty_box_held") >= MAX_HELD else None

        until(box_full, timeout_s=20.0, what=f"{MAX_HELD} requests held")

        def turned_away() -> bool | None:
            full = _metric(target.url, "surgeguard_rejections_total", 'reason="penalty_full"')
            return True if full > 0 else None

        until(turned_away, timeout_s=20.0, what="a penalty_full answer")
        stack.controller.tick()
    assert 401 in impatient.statuses  # held, then answered: still no key
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", stack.url)
    yield stack


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _chart(at: AppTest, key: str) -> dict[str, Any]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # type: ignore[attr-defined]
    return next(s for s in specs if s["layout"]["uirevision"] == key)


def test_the_operator_sees_the_held_clients_and_each_rejection_reason(stormed: Stack) -> None:
    at = _app()

    # What the replica held when the controller last scraped it (the box was full a
    # moment before; a hold may have just ended).
    state: Any = stormed.get("/state")
    held = state["aggregate"]["penalty_held"]
    assert 1 <= held <= MAX_HELD
    box = next(m for m in at.metric if m.label == "Penalty box")
    assert box.value == f"{held:,.0f} held"
    assert box.delta and box.delta.endswith("holds/s")

    door = _chart(at, "door")
    traces = {t["name"]: t for t in door["data"]}
    reasons = ("unauthorized", "duplicate_key", "penalty_full")
    assert set(reasons) <= traces.keys(), sorted(traces)
    colours = {traces[r]["line"]["color"] for r in reasons}
    assert len(colours) == len(reasons)
    assert {"held in the penalty box", "holds/s"} <= traces.keys()

    (breakdown,) = [c.value for c in at.caption if "by reason:" in c.value]
    for reason in reasons:
        assert re.search(rf"\b{reason} [\d.,]+/s", breakdown), breakdown

    throughput = {t["name"] for t in _chart(at, "throughput")["data"]}
    assert {f"rejected: {r}" for r in reasons} <= throughput


def test_the_operator_sees_rejection_work_named_as_the_bottleneck(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the controller names "rejection_work" (its rule is tested with the
    controller; here it is asked to name it on this tick's real signals), the page
    names it in the strip, with the controller's sentence, and in the bottleneck view."""
    decider = stack.controller.controller.decider

    def rejecting(s: ControllerSignals) -> Bottleneck:
        return Bottleneck("rejection_work", rejection_sentence(s))

    monkeypatch.setattr(decider, "bottleneck", rejecting)
    # A new name takes over once it has led for a few ticks (issue 16's hysteresis).
    stack.traffic_and_ticks(ticks=3)
    state: Any = stack.get("/state")
    assert state["bottleneck"]["name"] == "rejection_work"
    sentence = state["bottleneck"]["sentence"]
    assert sentence.startswith("rejection work: ")

    at = _app()
    (named,) = [w.value for w in at.warning if "Bottleneck:" in w.value]
    assert named.startswith("**Bottleneck: rejection work** (held ")  # issue 16: how long
    assert named.endswith(f" — {sentence}")
    title = _chart(at, "bottleneck")["layout"]["title"]
    assert title["text"] == "Bottleneck: rejection work"
    assert title["subtitle"]["text"].startswith("not a dependency")
