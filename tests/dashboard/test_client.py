"""The dashboard's HTTP client and its per-session feed against a real controller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from surgeguard_dashboard.client import ControllerClient, ControllerError
from surgeguard_dashboard.feed import Feed
from tests.dashboard.conftest import TOKEN, Stack


@pytest.fixture
def client(stack: Stack) -> Iterator[ControllerClient]:
    c = ControllerClient(stack.url)
    yield c
    c.close()


def test_reads_come_back_typed(stack: Stack, client: ControllerClient) -> None:
    state = client.state()
    assert state.slo_s == 0.25 and state.algorithm == "aimd"
    (replica,) = state.replicas
    assert state.signals(replica) is not None and state.aggregate is not None
    assert set(state.modes_available) == {
        "read_only",
        "recommendations_off",
        "serve_stale",
        "shed_sheddable",
    }
    assert state.bounds["concurrency_limit"][0] >= 1
    ticks = client.history(300)
    assert ticks and [t.at for t in ticks] == sorted(t.at for t in ticks)
    assert client.history(300, since=ticks[-1].at) == []
    assert isinstance(client.decisions(10), list) and client.audit(10) == []


def test_a_write_returns_the_new_control_document(client: ControllerClient) -> None:
    before = client.state().control.version
    control = client.set_knob(TOKEN, "queue_limit", value=5, pin=True, reason="test")
    assert control.version > before
    assert control.knobs["queue_limit"] == 5 and "queue_limit" in control.pins
    assert "queue_limit" not in client.unpin(TOKEN, "queue_limit", reason="test").pins
    assert client.set_autopilot(TOKEN, enabled=False, reason="test").autopilot is False
    chaos = client.set_chaos(TOKEN, "db", latency_multiplier=4.0, error_rate=0.1, reason="t")
    assert chaos.chaos["db"].latency_multiplier == 4.0 and not chaos.chaos["db"].is_calm
    audit = client.audit(10)
    assert [a.what for a in audit[:2]] == ["chaos db", "autopilot"]


REFUSALS: list[tuple[Callable[[ControllerClient], object], int, str]] = [
    (lambda c: c.set_mode("wrong", "read_only", active=True, reason="x"), 401, "bearer token"),
    (lambda c: c.set_mode(TOKEN, "panic", active=True, reason="x"), 404, "unknown mode"),
    (
        lambda c: c.set_knob(TOKEN, "concurrency_limit", value=0, pin=None, reason="x"),
        422,
        "concurrency_limit must be in [1, 10000]",
    ),
    (lambda c: c.set_mode(TOKEN, "read_only", active=True, reason=""), 422, "reason"),
]


def test_a_refusal_carries_the_controllers_message(client: ControllerClient) -> None:
    # One controller for every case: each refusal changes nothing.
    for call, status, says in REFUSALS:
        with pytest.raises(ControllerError) as caught:
            call(client)
        assert caught.value.status == status
        assert says in caught.value.message and f"HTTP {status}" in caught.value.message
    with pytest.raises(ControllerError, match="an admin token is needed"):
        client.set_mode("", "read_only", active=True, reason="x")  # not even sent
    assert client.audit(10) == [] and client.state().control.modes == frozenset()


def test_an_unreachable_controller_is_one_clear_line(stack: Stack) -> None:
    stack.controller.server.stop()
    client = ControllerClient(stack.url)
    with pytest.raises(ControllerError) as caught:
        client.state()
    assert caught.value.unreachable
    assert caught.value.message.startswith(f"cannot reach the controller at {stack.url}")
    client.close()


def test_the_feed_fetches_only_what_is_new_and_keeps_the_last_data_on_failure(
    stack: Stack, client: ControllerClient
) -> None:
    feed = Feed()
    assert feed.refresh(client, 300, time.time())
    first = [t.at for t in feed.ticks]
    stack.traffic_and_ticks(ticks=2, requests=2)  # three more ticks
    assert feed.refresh(client, 300, time.time())
    after = [t.at for t in feed.ticks]
    assert after[: len(first)] == first and len(after) == len(first) + 3
    assert len(set(after)) == len(after)

    state, ticks = feed.state, feed.ticks
    stack.controller.server.stop()
    assert not feed.refresh(client, 300, time.time())
    assert not feed.refresh(client, 300, time.time())
    assert feed.failures == 2 and feed.error and "cannot reach" in feed.error
    assert feed.state is state and feed.ticks is ticks  # the last data stays
