"""Two target replicas on one Redis, one controller tuning both (real processes)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.processes import controller_process, db_bound_env, free_port, surgeguard
from tests.support.rawhttp import closed_loop

TOKEN = "replicas-admin-token-24-chars"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = [f"client-{n}" for n in range(10)]


@dataclass
class Pair:
    replicas: list[str]  # target URLs
    controller: str


@pytest.fixture
def pair(redis_server: EmbeddedRedis, redis_client: object) -> Iterator[Pair]:
    """Two replicas with small db capacity (about 200 reads/s each) and a controller
    with 0.25 s ticks tuning both, each from its own signals."""
    env = db_bound_env(redis_server.url, KEYS, SURGEGUARD_ADMIN_TOKEN=TOKEN)
    with ExitStack() as stack:
        urls = []
        for name in ("replica-a", "replica-b"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(
                surgeguard(
                    "target",
                    "--port",
                    str(port),
                    "--replica-id",
                    name,
                    env=env,
                    health_url=f"{url}/healthz",
                )
            )
            urls.append(url)
        controller, _ = stack.enter_context(controller_process(urls, env))
        yield Pair(urls, controller)


def _wait(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def _readyz(url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{url}/readyz", timeout=5).json()
    return body


@pytest.mark.slow
def test_an_operator_change_reaches_both_replicas(pair: Pair) -> None:
    with httpx.Client(base_url=pair.controller, headers=AUTH, timeout=5) as client:
        assert (
            client.put(
                "/api/v1/knobs/queue_limit", json={"value": 33, "pin": True, "reason": "both"}
            ).status_code
            == 200
        )
        assert (
            client.put(
                "/api/v1/modes/recommendations_off", json={"active": True, "reason": "both"}
            ).status_code
            == 200
        )
    for url in pair.replicas:
        _wait(
            lambda url=url: (
                _readyz(url)["knobs"]["queue_limit"] == 33  # type: ignore[index]
                and _readyz(url)["modes"] == ["recommendations_off"]
            ),
            2.0,
        )
    state = httpx.get(f"{pair.controller}/api/v1/state", timeout=5).json()
    assert set(state["replicas"]) == {"replica-a", "replica-b"}


@pytest.mark.slow
def test_each_replica_is_tuned_from_its_own_signals(pair: Pair) -> None:
    """Only replica a is overloaded: only its limit is cut; b keeps its own."""
    heavy, light = pair.replicas

    async def load() -> None:
        await asyncio.gather(
            closed_loop(
                heavy,
                150,
                8.0,
                lambda: f"/items/{random.randint(1, 100_000)}",
                headers=lambda n: {"X-Api-Key": KEYS[n % len(KEYS)]},
                pause_after_rejection_s=0.05,
            ),
            closed_loop(
                light,
                2,
                8.0,
                lambda: f"/items/{random.randint(1, 100_000)}",
                headers={"X-Api-Key": KEYS[0]},
            ),
        )

    asyncio.run(load())
    a, b = _readyz(heavy)["knobs"], _readyz(light)["knobs"]
    assert a["concurrency_limit"] < 70, a  # type: ignore[index]
    assert b["concurrency_limit"] == 100, b  # type: ignore[index]
    decisions = httpx.get(
        f"{pair.controller}/api/v1/decisions", params={"limit": 2000}, timeout=5
    ).json()
    cut = {
        d["replica"] for d in decisions if d["knob"] == "concurrency_limit" and d["action"] == "cut"
    }
    assert cut == {"replica-a"}
