"""The inner loop in a real replica (issue 14, item 1): the demo service as its own
process (``surgeguard target``, ``SURGEGUARD_INNER_LOOP=aimd``), the session's real
Redis, no controller. A closed-loop load reads items from a db of 4 slots x 20 ms;
chaos in the control document makes the db 5x slower. The inner limit settles at the
knee, far under the ``concurrency_limit`` knob, and is not cut towards the floor while
the db is slow on its own; with the knob pinned it does not move at all. Bounds are
generous (a loaded 2-core machine), the values are read from the replica's own
``/metrics``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from surgeguard import metric_names as names
from surgeguard.chaos import CALM, Chaos
from surgeguard.controlplane import ControlPlaneWriter, ControlState
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.processes import db_bound_env, free_port, surgeguard
from tests.support.rawhttp import LoadReport, closed_loop

KEYS = [f"inner-{n}" for n in range(4)]
KNOB = 40  # the concurrency_limit knob the replica starts with: the ceiling
WORKERS = 12  # calm: 12 in flight on 200 reads/s, about 60 ms each (target 200 ms)
SLOW = Chaos(latency_multiplier=5.0)  # 40 reads/s: 300 ms each at 12 in flight


@pytest.fixture(scope="module")
def replica(redis_server: EmbeddedRedis) -> Iterator[str]:
    redis.Redis.from_url(redis_server.url).flushall()  # no document of another test
    env = db_bound_env(redis_server.url, KEYS, SURGEGUARD_INNER_LOOP="aimd")
    env.update(SURGEGUARD_CONCURRENCY_LIMIT=str(KNOB), SURGEGUARD_CONTROL_POLL_MS="100")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with surgeguard("target", "--port", str(port), env=env, health_url=f"{url}/healthz"):
        yield url


def metric(url: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def _control(redis_url: str, *, chaos: Chaos, pinned: bool) -> None:
    """Write the document: chaos on the db, the knob pinned at its value or not."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        writer = ControlPlaneWriter(client, writer="test")

        def change(state: ControlState) -> ControlState:
            others = state.pins - {"concurrency_limit"}
            pins = others | {"concurrency_limit"} if pinned else others
            knobs = {**state.knobs, "concurrency_limit": KNOB}
            return replace(state, knobs=knobs, pins=pins)

        await writer.update(change)
        await writer.set_chaos("db", chaos)
    finally:
        await client.aclose()


def _load(url: str, seconds: float, report: LoadReport) -> asyncio.Task[LoadReport]:
    return asyncio.create_task(
        closed_loop(
            url,
            WORKERS,
            seconds,
            lambda: f"/items/{random.randint(1, 100_000)}",
            headers=lambda n: {"X-Api-Key": KEYS[n % len(KEYS)]},
            report=report,
        )
    )


async def _moved(url: str, timeout_s: float) -> None:
    """Poll until the inner loop has cut at least once (its first estimate is in)."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(metric, url, names.INNER_MOVES_TOTAL, direction="cut"):
        assert time.monotonic() < deadline, f"no inner-loop cut within {timeout_s} s"
        await asyncio.sleep(0.1)


def test_the_inner_limit_settles_at_the_knee_under_the_knob_and_holds_when_the_db_slows(
    replica: str, redis_server: EmbeddedRedis
) -> None:
    """Calm, 12 in flight on a db of 4 slots: the knee is under the knob, so the inner
    limit settles there (the SLO rule alone would leave it at 40: 60 ms is well under
    the target). The limit is not binding, so the knee does not probe and its base is
    the latency of 12 in flight: 1.5 x 12 + 3 = 21. The db 5x slower: it still needs 4
    in flight, so the limit is not cut towards the floor. Calm again: at the knee."""

    async def phase(seconds: float) -> list[float]:
        seen = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = await asyncio.to_thread(metric, replica, names.INNER_LIMIT)
            assert value is not None, f"{names.INNER_LIMIT} is not exported"
            seen.append(value)
            await asyncio.sleep(0.2)
        return seen

    async def scenario() -> tuple[list[float], list[float], list[float]]:
        await _control(redis_server.url, chaos=CALM, pinned=False)
        load = _load(replica, 20.0, LoadReport())
        try:
            # The knee's first estimate shows as the first cut from the knob.
            await _moved(replica, 10.0)
            calm = await phase(4.0)
            await _control(redis_server.url, chaos=SLOW, pinned=False)
            slow = await phase(6.0)
            await _control(redis_server.url, chaos=CALM, pinned=False)
            await asyncio.sleep(1.0)
            again = await phase(4.0)
            return calm, slow, again
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)

    calm, slow, again = asyncio.run(scenario())
    median = statistics.median
    assert median(calm) <= 30 < KNOB, calm
    assert median(slow) >= 4, slow  # the db's own slowness: no cut below what keeps it busy
    assert median(again) <= 30, again
    assert metric(replica, names.CONCURRENCY_LIMIT) == KNOB  # the knob never moved
    assert (metric(replica, names.INNER_MOVES_TOTAL, direction="cut") or 0) >= 1


def test_a_pinned_concurrency_limit_is_enforced_exactly(
    replica: str, redis_server: EmbeddedRedis
) -> None:
    async def scenario() -> tuple[set[float], LoadReport]:
        await _control(redis_server.url, chaos=SLOW, pinned=True)
        await asyncio.sleep(0.3)  # applied within a poll (100 ms) or at once by pub/sub
        report = LoadReport()
        load = _load(replica, 3.0, report)
        seen: set[float] = set()
        while not load.done():
            value = await asyncio.to_thread(metric, replica, names.INNER_LIMIT)
            assert value is not None, f"{names.INNER_LIMIT} is not exported"
            seen.add(value)
            await asyncio.sleep(0.2)
        await load
        await _control(redis_server.url, chaos=CALM, pinned=True)
        return seen, report

    seen, report = asyncio.run(scenario())
    served = sorted(r.latency_s for r in report.results if r.status == 200)
    # The db really was slow, over the 200 ms target (the loop would have cut it):
    # still the pin, exactly.
    assert served and served[len(served) // 2] > 0.2, served[len(served) // 2 :][:5]
    assert seen == {float(KNOB)}, seen
