"""Replicas that come and go (issue 15), all real processes: a controller started with
no target at all tunes the replicas that announce themselves in Redis, forgets one
that stops (at once) or is killed (after forget_after), with its series and its own
knobs in the control document, and keeps them through a Redis restart that lost the
list. Nothing is restarted or reconfigured when replicas come or go."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.fleet import REPLICAS_KEY, URLS_KEY
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import until_truthy
from tests.support.processes import clean_env, free_port, stop, surgeguard

FORGET_AFTER_MS = 2000
# Generous: a replica is tuned about two ticks after its first announcement.
WITHIN_S = 15.0


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own, on a fixed port, so a test may restart it."""
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("fleet-redis"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(own_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


class Fleet:
    """A controller with no static target and replicas started and stopped at will."""

    def __init__(self, stack: ExitStack, redis_url: str) -> None:
        self.stack = stack
        self.redis_url = redis_url
        port = free_port()
        self.controller = f"http://127.0.0.1:{port}"
        env = clean_env(
            SURGEGUARD_REDIS_URL=redis_url,
            SURGEGUARD_CONTROLLER_FORGET_AFTER_MS=str(FORGET_AFTER_MS),
        )
        stack.enter_context(
            surgeguard(
                "controller",
                "--port",
                str(port),
                "--tick-ms",
                "250",
                env=env,
                health_url=f"{self.controller}/healthz",
            )
        )
        self.replicas: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, announce_ms: int = 250) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = clean_env(
            SURGEGUARD_REDIS_URL=self.redis_url,
            SURGEGUARD_ANNOUNCE_INTERVAL_MS=str(announce_ms),
            SURGEGUARD_CONTROL_POLL_MS="200",
        )
        self.replicas[name] = self.stack.enter_context(
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
        return url

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.controller}/api/v1/state", timeout=5).json()
        return body

    def tuned(self, name: str) -> bool:
        """Read and decided for: it has signals and this tick's reasons."""
        view = self.state()["replicas"].get(name)
        return bool(view and view["reasons"] and not view["signals"]["stale"])

    def forgotten(self, name: str) -> bool:
        state = self.state()
        return name not in state["replicas"] and name not in state["control"]["replicas"]

    def reasons(self) -> list[str]:
        decisions = httpx.get(
            f"{self.controller}/api/v1/decisions", params={"limit": 500}, timeout=5
        ).json()
        return [d["reason"] for d in decisions if d.get("knob") == "replica"]

    def metrics(self) -> str:
        return httpx.get(f"{self.controller}/metrics", timeout=5).text


@contextmanager
def fleet(redis_url: str) -> Iterator[Fleet]:
    with ExitStack() as stack:
        yield Fleet(stack, redis_url)


def _own_knobs(redis_url: str, knobs: dict[str, dict[str, int]]) -> None:
    """Give replicas knobs of their own in the document (as a budget's shares are)."""

    async def write() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await ControlPlaneWriter(client, writer="test").update(
                lambda s: replace(s, replicas={**s.replicas, **knobs})
            )
        finally:
            await client.aclose()

    asyncio.run(write())


@pytest.mark.slow
def test_replicas_come_and_go_without_a_restart(
    own_redis: EmbeddedRedis, store: redis.Redis
) -> None:
    with fleet(own_redis.url) as f:
        assert f.state()["replicas"] == {}
        # Written straight into Redis: shown with a reason, never a broken tick.
        nowhere = f"http://127.0.0.1:{free_port()}"
        store.hset(URLS_KEY, mapping={"bogus-ftp": "ftp://127.0.0.1:21", "bogus-nowhere": nowhere})
        seconds, _ = store.time()
        store.zadd(REPLICAS_KEY, {"bogus-ftp": seconds * 1000, "bogus-nowhere": seconds * 1000})

        def shown() -> bool:
            found = f.state()["discovery"]
            return "bogus-ftp" in found["ignored"] and nowhere in found["errors"]

        until_truthy(shown, WITHIN_S, "the bogus announcements shown with their reasons")
        url_a = f.start("fleet-a")
        until_truthy(lambda: f.tuned("fleet-a"), WITHIN_S, "fleet-a tuned")
        url_b = f.start("fleet-b")
        until_truthy(lambda: f.tuned("fleet-b"), WITHIN_S, "fleet-b tuned")
        targets = httpx.get(f"{f.controller}/api/v1/targets", timeout=5).json()
        assert targets == [
            {
                "targets": [u.removeprefix("http://") for u in (url_a, url_b)],
                "labels": {"job": "surgeguard-replicas"},
            }
        ]
        assert "surgeguard_controller_replicas 2.0" in f.metrics()
        assert any("replica fleet-b joined" in r for r in f.reasons())
        _own_knobs(own_redis.url, {"fleet-a": {"queue_limit": 30}, "fleet-b": {"queue_limit": 31}})

        # A clean stop: the replica removes itself, the controller forgets it at once.
        stop(f.replicas["fleet-a"])
        assert store.zscore(REPLICAS_KEY, "fleet-a") is None  # said goodbye on its way out
        until_truthy(lambda: f.forgotten("fleet-a"), WITHIN_S, "fleet-a forgotten")
        assert f.state()["control"]["replicas"] == {"fleet-b": {"queue_limit": 31}}
        assert "replica fleet-a left (removed itself): forgotten" in f.reasons()
        assert 'replica="fleet-a"' not in f.metrics()
        assert url_a not in f.state()["discovery"]["errors"]

        # Killed: no goodbye; forgotten once silent for forget_after.
        f.replicas["fleet-b"].send_signal(signal.SIGKILL)
        f.replicas["fleet-b"].wait()
        assert store.zscore(REPLICAS_KEY, "fleet-b") is not None
        until_truthy(lambda: f.forgotten("fleet-b"), WITHIN_S, "fleet-b forgotten")
        left = [r for r in f.reasons() if r.startswith("replica fleet-b left")]
        assert left and "(not announced for " in left[0], left
        assert f.state()["control"]["replicas"] == {}
        assert "surgeguard_controller_replicas 0.0" in f.metrics()
        assert f.state()["tick"]["ok"], f.state()["tick"]
        assert not f.state()["discovery"]["errors"]  # bogus-nowhere pruned once silent

        # And one more comes: still no restart.
        f.start("fleet-c")
        until_truthy(lambda: f.tuned("fleet-c"), WITHIN_S, "fleet-c tuned")


def _lose_data(server: EmbeddedRedis) -> None:
    """Stop Redis and start it again on its port with its append-only file gone."""
    server.stop()
    for path in Path(server.data_dir).iterdir():
        if "appendonly" in path.name:
            if path.is_dir():
                for inner in path.iterdir():
                    inner.unlink()
                path.rmdir()
            else:
                path.unlink()
    server.start()


@pytest.mark.slow
def test_after_a_redis_restart_that_lost_the_list_the_replicas_announce_again(
    own_redis: EmbeddedRedis, store: redis.Redis
) -> None:
    with fleet(own_redis.url) as f:
        # It announces seldom: the controller sees the empty list for several ticks.
        f.start("fleet-a", announce_ms=FORGET_AFTER_MS * 3 // 4)
        until_truthy(lambda: f.tuned("fleet-a"), WITHIN_S, "fleet-a tuned")
        _lose_data(own_redis)
        client = redis.Redis.from_url(own_redis.url)
        try:
            until_truthy(
                lambda: client.zscore(REPLICAS_KEY, "fleet-a"), WITHIN_S, "fleet-a announced again"
            )
            until_truthy(lambda: f.state()["tick"]["ok"], WITHIN_S, "the controller ticks again")
        finally:
            client.close()
        until_truthy(lambda: f.tuned("fleet-a"), WITHIN_S, "fleet-a tuned again")
        assert not [r for r in f.reasons() if "left" in r]  # it was never forgotten
