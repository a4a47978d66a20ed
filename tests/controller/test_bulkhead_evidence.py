"""A bulkhead cut that costs the calls it was to protect goes back (issue 14, item 2):
real processes. A replica whose db has room (64 slots) behind a bulkhead (16 at the
start, grown while the db is fast); the db
turns 8x slower on its own (chaos through the controller, as an operator's drill
would); its p99 is then far over 3x its baseline, and the controller cuts the
bulkhead. But every slot was working, not queueing: with half the slots the db
completes half the calls while the bulkhead refuses the rest. The controller puts the
slots back after that one cut and holds, where before it cut once more before
its futile-cut rule saw the latency had not fallen (on a starved CPU, where latency
does fall a little with fewer slots, the old rules walked bulkhead.db to 1)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import eventually, until_truthy
from tests.support.processes import controller_process, db_bound_env, free_port, surgeguard
from tests.support.rawhttp import closed_loop

TOKEN = "bulkhead-evidence-token-24ch"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = [f"client-{n}" for n in range(8)]
USERS = 60  # closed loop: far more than the bulkhead's 16 slots
LOAD_S = 16.0


@pytest.fixture
def stack(redis_server: EmbeddedRedis, redis_client: Any) -> Iterator[tuple[str, str]]:
    """(replica URL, controller URL): the db 64 slots x 20 ms, its bulkhead 16."""
    env = {
        **db_bound_env(redis_server.url, KEYS, SURGEGUARD_ADMIN_TOKEN=TOKEN),
        "SURGEGUARD_DB_CAPACITY": "64",
        "SURGEGUARD_BULKHEAD_MAX_WAIT_MS": "50",  # a full bulkhead answers 503 soon
    }
    port = free_port()
    replica = f"http://127.0.0.1:{port}"
    with (
        surgeguard("target", "--port", str(port), env=env, health_url=f"{replica}/healthz"),
        controller_process([replica], env) as (controller, _),
    ):
        yield replica, controller


def test_a_bulkhead_cut_that_halves_the_dbs_calls_is_put_back(stack: tuple[str, str]) -> None:
    replica, controller = stack
    slots: list[int] = []
    at_chaos: list[int] = []  # how many readings came before the db slowed
    done = threading.Event()

    def watch() -> None:  # what the replica enforces, ten times a second
        with httpx.Client(timeout=2) as client:
            while not done.is_set():
                with suppress(httpx.HTTPError, KeyError, ValueError):
                    slots.append(client.get(f"{replica}/readyz").json()["knobs"]["bulkhead.db"])
                time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def load_then_slow_db() -> None:
        load = asyncio.create_task(
            closed_loop(
                replica,
                USERS,
                LOAD_S,
                lambda: f"/items/{random.randint(1, 100_000)}",
                headers=lambda n: {"X-Api-Key": KEYS[n % len(KEYS)]},
                pause_after_rejection_s=0.05,
            )
        )
        async with httpx.AsyncClient(timeout=5) as client:
            # The controller has judged the db against a healthy baseline (a move of
            # bulkhead.db names it) before the db slows.
            async def judged_against_a_baseline() -> bool:
                decisions = (await client.get(f"{controller}/api/v1/decisions")).json()
                return any(
                    d.get("knob") == "bulkhead.db" and "baseline" in d.get("reason", "")
                    for d in decisions
                )

            await eventually(
                judged_against_a_baseline, LOAD_S / 2, "a bulkhead.db decision against a baseline"
            )
            at_chaos.append(len(slots))
            answer = await client.put(
                f"{controller}/api/v1/chaos/db",
                json={"latency_multiplier": 8.0, "reason": "the db slows on its own"},
                headers=AUTH,
            )
            assert answer.status_code == 200, answer.text
        await load

    try:
        asyncio.run(load_then_slow_db())
    finally:
        done.set()
        watcher.join(timeout=5)

    decisions = httpx.get(
        f"{controller}/api/v1/decisions", params={"limit": 2000}, timeout=5
    ).json()
    db = [d for d in reversed(decisions) if d.get("knob") == "bulkhead.db"]
    cuts = [d for d in db if d["action"] == "cut"]
    assert cuts, [d["reason"] for d in db]  # the latency did ask for a cut
    first = cuts[0]  # the slots it had when the db slowed (grown while it was fast)
    # One cut, then back: never walked further down.
    after = slots[at_chaos[0] :]
    assert min(after) >= first["new"], (first, after, [d["reason"] for d in db])
    back = [d for d in db if d["action"] == "grow" and "of its calls" in d["reason"]]
    assert back, [d["reason"] for d in db]
    assert f"its slots were working, not queueing; back to {first['old']}" in back[0]["reason"]
    assert until_truthy(
        lambda: (
            httpx.get(f"{replica}/readyz", timeout=2).json()["knobs"]["bulkhead.db"] >= first["old"]
        ),
        5,
        f"bulkhead.db back at {first['old']}",
    )
