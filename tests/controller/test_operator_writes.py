"""Operator writes called as plain functions, without HTTP, against a real Redis: a
valid write is stored as one new version and audited; a bad value or an unknown name
writes nothing and says what is allowed. The catalogue is one a replica might declare
(a dependency and a mode the library has never heard of)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from surgeguard.controlplane import CONTROL_KEY, ControlPlaneWriter, ControlState, read_state
from surgeguard.knobs import DOOR_KNOB_SPECS, bulkhead_spec
from surgeguard.modes import DOOR_MODES, ModeSpec
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller import operator_writes as writes
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.store import AUDIT_KEY, RecordStore
from tests.support.clock import FakeClock

INVENTORY = bulkhead_spec("inventory_db", 12, minimum=2, maximum=40)
CATALOGUE = Catalogue(
    knob_specs={**DOOR_KNOB_SPECS, INVENTORY.name: INVENTORY},
    modes={
        **{m.name: m for m in DOOR_MODES},
        "search_off": ModeSpec("search_off", "Answer searches from the cache only."),
    },
)
WHO = "alice"  # the operator's name


@pytest.fixture
async def desk(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, fake_clock: FakeClock
) -> AsyncIterator[writes.Desk]:
    """A desk on a clean Redis (``redis_client`` flushed it), stamping with the fake
    clock."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield writes.Desk(
            client,
            ControlPlaneWriter(client, writer="controller", check=CATALOGUE.check),
            RecordStore(client),
            wall=fake_clock,
        )
    finally:
        await client.aclose()


async def _nothing_written(desk: writes.Desk) -> None:
    assert (await read_state(desk.redis)).version == 0
    assert await desk.records.audit() == []


async def test_a_knob_write_is_stored_pinned_and_audited(
    desk: writes.Desk, fake_clock: FakeClock
) -> None:
    fake_clock.advance(5)
    at = fake_clock()
    after = await writes.set_knob(
        desk,
        CATALOGUE,
        "bulkhead.inventory_db",
        value=30,
        pin=True,
        who=WHO,
        reason="the new db takes more",
        reported={"r1": {"bulkhead.inventory_db": 12}, "r2": {"concurrency_limit": 64}},
    )
    stored = await read_state(desk.redis)
    assert stored == after and stored.version == 1
    assert stored.knobs == {"bulkhead.inventory_db": 30}
    assert stored.pins == {"bulkhead.inventory_db"}
    assert await desk.records.audit() == [
        {
            "at": at,
            "who": WHO,
            "what": "knob bulkhead.inventory_db",
            # Nothing was published yet: the old value is what the replicas reported.
            "old": {"value": {"r1": 12}, "pinned": False},
            "new": {"value": 30, "pinned": True},
            "reason": "the new db takes more",
        }
    ]
    # A pin alone keeps the published value; unpinning lets the controller move it.
    await writes.set_knob(
        desk, CATALOGUE, "bulkhead.inventory_db", value=None, pin=False, who=WHO, reason="r"
    )
    await writes.unpin(desk, CATALOGUE, "bulkhead.inventory_db", who=WHO, reason="spike over")
    stored = await read_state(desk.redis)
    assert (stored.version, stored.knobs, stored.pins) == (3, {"bulkhead.inventory_db": 30}, set())
    latest = await desk.records.audit(2)
    assert [e["what"] for e in latest] == [
        "pin bulkhead.inventory_db",
        "knob bulkhead.inventory_db",
    ]
    assert latest[1]["old"] == {"value": 30, "pinned": True}


async def test_a_pin_alone_keeps_the_value_a_controller_move_set_meanwhile(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, fake_clock: FakeClock
) -> None:
    """Issue 13: a pin-only write must not write back a value read before a controller
    move. The move lands right after the write first reads the document (the writer's
    ``recall`` runs on every read of it)."""
    redis_client.set(CONTROL_KEY, ControlState(1, {"concurrency_limit": 40}, epoch="e").to_json())
    moves: list[int] = []

    def a_controller_move_lands() -> ControlState:
        if not moves:
            read = ControlState.from_json(redis_client.get(CONTROL_KEY) or b"")
            moved = replace(read, version=read.version + 1, knobs={"concurrency_limit": 30})
            moves.append(redis_client.set(CONTROL_KEY, moved.to_json()))
        return ControlState()  # nothing to restore from

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        writer = ControlPlaneWriter(client, check=CATALOGUE.check, recall=a_controller_move_lands)
        desk = writes.Desk(client, writer, RecordStore(client), wall=fake_clock)
        await writes.set_knob(
            desk, CATALOGUE, "concurrency_limit", value=None, pin=True, who=WHO, reason="hold"
        )
        stored = await read_state(client)
        assert moves and stored.knobs == {"concurrency_limit": 30}  # the move stands
        assert stored.pins == {"concurrency_limit"}
        (entry,) = await desk.records.audit()
        assert (entry["old"], entry["new"]) == (
            {"value": 30, "pinned": False},
            {"value": 30, "pinned": True},
        )
    finally:
        await client.aclose()


async def test_a_write_whose_audit_cannot_be_stored_changes_nothing(
    desk: writes.Desk, redis_client: redis.Redis
) -> None:
    redis_client.set(AUDIT_KEY, "not a list")
    with pytest.raises(writes.WriteError) as caught:
        await writes.set_mode(desk, CATALOGUE, "read_only", True, who=WHO, reason="r")
    assert caught.value.status == 503 and "nothing was changed" in caught.value.message
    assert (await read_state(desk.redis)).version == 0


async def test_an_operators_value_replaces_per_replica_tuning_of_that_knob(
    desk: writes.Desk,
) -> None:
    await desk.writer.set_knobs({"concurrency_limit": 50, "queue_limit": 10}, replica="r1")
    await writes.set_knob(
        desk, CATALOGUE, "concurrency_limit", value=20, pin=None, who=WHO, reason="r"
    )
    stored = await read_state(desk.redis)
    assert stored.knobs == {"concurrency_limit": 20}
    assert stored.replicas == {"r1": {"queue_limit": 10}}


async def test_modes_autopilot_and_chaos_are_written_and_audited(desk: writes.Desk) -> None:
    await writes.set_mode(desk, CATALOGUE, "search_off", True, who=WHO, reason="search is slow")
    await writes.set_autopilot(desk, False, who=WHO, reason="investigating")
    await writes.set_chaos(
        desk, CATALOGUE, "inventory_db", latency_multiplier=4, who=WHO, reason="drill"
    )
    stored = await read_state(desk.redis)
    assert stored.version == 3
    assert stored.modes == {"search_off"} and stored.autopilot is False
    assert stored.chaos["inventory_db"].latency_multiplier == 4
    entries = {e["what"]: (e["old"], e["new"]) for e in await desk.records.audit()}
    assert entries == {
        "mode search_off": (False, True),
        "autopilot": (True, False),
        "chaos inventory_db": (
            {"latency_multiplier": 1.0, "error_rate": 0.0},
            {"latency_multiplier": 4.0, "error_rate": 0.0},
        ),
    }
    await writes.set_mode(desk, CATALOGUE, "search_off", False, who=WHO, reason="fixed")
    assert (await read_state(desk.redis)).modes == frozenset()


@pytest.mark.parametrize(
    ("knob", "value", "says"),
    [
        (
            "bulkhead.inventory_db",
            41,
            "value: bulkhead.inventory_db must be in [2, 40] calls, got 41",
        ),
        (
            "bulkhead.inventory_db",
            1,
            "value: bulkhead.inventory_db must be in [2, 40] calls, got 1",
        ),
        ("concurrency_limit", 0, "value: concurrency_limit must be in [1, 10000] requests, got 0"),
        ("queue_timeout_ms", True, "value: queue_timeout_ms must be an integer, got True"),
    ],
)
async def test_a_value_outside_its_bounds_writes_nothing_and_names_knob_and_bound(
    desk: writes.Desk, knob: str, value: Any, says: str
) -> None:
    with pytest.raises(writes.WriteError) as caught:
        await writes.set_knob(desk, CATALOGUE, knob, value=value, pin=True, who=WHO, reason="r")
    assert (caught.value.status, caught.value.message) == (422, says)
    await _nothing_written(desk)


@pytest.mark.parametrize(
    ("write", "status", "says"),
    [
        (
            lambda d: writes.set_knob(
                d, CATALOGUE, "queue_limit", value=None, pin=None, who=WHO, reason="r"
            ),
            422,
            "give a value, a pin, or both",
        ),
        (
            lambda d: writes.set_knob(
                d, CATALOGUE, "queue_limit", value=None, pin=True, who=WHO, reason="r"
            ),
            422,
            "value is required: queue_limit has no published value yet",
        ),
        (
            lambda d: writes.set_chaos(
                d, CATALOGUE, "inventory_db", error_rate=1.5, who=WHO, reason="r"
            ),
            422,
            "error_rate must be in [0, 1], got 1.5",
        ),
        (
            lambda d: writes.set_autopilot(d, False, who=WHO, reason=""),
            422,
            "reason must be 1 to 200 characters, got 0",
        ),
    ],
)
async def test_an_incomplete_or_invalid_write_writes_nothing(
    desk: writes.Desk, write: Any, status: int, says: str
) -> None:
    with pytest.raises(writes.WriteError) as caught:
        await write(desk)
    assert (caught.value.status, caught.value.message) == (status, says)
    await _nothing_written(desk)


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (
            lambda d: writes.set_knob(
                d, CATALOGUE, "bulkhead.db", value=3, pin=None, who=WHO, reason="r"
            ),
            "unknown knob 'bulkhead.db': allowed are concurrency_limit, queue_limit, "
            "queue_timeout_ms, bulkhead.inventory_db",
        ),
        (
            lambda d: writes.unpin(d, CATALOGUE, "threads", who=WHO, reason="r"),
            "unknown knob 'threads': allowed are concurrency_limit, queue_limit, "
            "queue_timeout_ms, bulkhead.inventory_db",
        ),
        (
            lambda d: writes.set_mode(d, CATALOGUE, "serve_stale", True, who=WHO, reason="r"),
            "unknown mode 'serve_stale': allowed are shed_sheddable, read_only, search_off",
        ),
        (
            lambda d: writes.set_chaos(
                d, CATALOGUE, "db", latency_multiplier=2, who=WHO, reason="r"
            ),
            "unknown dependency 'db': allowed are inventory_db",
        ),
    ],
)
async def test_an_unknown_name_writes_nothing_and_lists_what_is_allowed(
    desk: writes.Desk, write: Any, says: str
) -> None:
    with pytest.raises(writes.WriteError) as caught:
        await write(desk)
    assert (caught.value.status, caught.value.message) == (404, says)
    await _nothing_written(desk)


def test_no_replica_declaring_a_dependency_is_said_so() -> None:
    with pytest.raises(writes.WriteError) as caught:
        writes.known_dependency(Catalogue(), "inventory_db")
    assert caught.value.message == (
        "unknown dependency 'inventory_db': allowed are none (no replica declares a dependency)"
    )


def test_the_changes_are_pure() -> None:
    state = ControlState(knobs={"queue_limit": 5}, pins=frozenset({"queue_limit"}))
    assert writes.with_mode(state, "read_only", True).modes == {"read_only"}
    assert writes.without_pin(state, "queue_limit").pins == frozenset()
    assert writes.with_autopilot(state, False).autopilot is False
    pinned = writes.with_knob(state, "concurrency_limit", 9, pin=True)
    assert pinned.knobs == {"queue_limit": 5, "concurrency_limit": 9}
    assert pinned.pins == {"queue_limit", "concurrency_limit"}
    assert state == ControlState(knobs={"queue_limit": 5}, pins=frozenset({"queue_limit"}))
