"""Replicas and one remote API between them (issue 15): the remote is a real
``surgeguard remote`` process, the replicas real uvicorn servers on the same real Redis.
One chaos write slows the remote for every replica; together they get no more than its
capacity; a slow or stopped remote is a degraded feed and a 503 naming payments."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.bulkhead import BulkheadStats
from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.remote import api
from tests.support.polling import eventually
from tests.support.processes import clean_env, free_port, spawn, stop, wait_healthy
from tests.target_app.conftest import API_KEY, StartTarget

ORDER = {"item_id": 7, "quantity": 2}


@dataclass(frozen=True)
class Scrape:
    """One look at a remote API's own /metrics."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def answered(self, name: str, outcome: str = "ok") -> float:
        return self.value(api.CALLS_TOTAL, dependency=name, outcome=outcome)


@dataclass
class Remote:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    async def scrape(self, http: httpx.AsyncClient) -> Scrape:
        response = await http.get(f"{self.url}/metrics")
        assert response.status_code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        return Scrape(samples)

    async def shows(self, http: httpx.AsyncClient, metric: str, value: float) -> bool:
        return (await self.scrape(http)).value(metric, dependency=self.name) == value


StartRemotes = Callable[..., dict[str, Remote]]


@pytest.fixture
def start_remotes(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[StartRemotes]:
    """``start_remotes(recommendations={"capacity": "1"}, ...)``: one ``surgeguard remote``
    process per name given (its settings as ``SURGEGUARD_<NAME>_<KEY>``), all started
    before any is waited for; every one is stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**settings: dict[str, str]) -> dict[str, Remote]:
        remotes: dict[str, Remote] = {}
        for name, values in settings.items():
            port = free_port()
            env = clean_env(
                SURGEGUARD_REDIS_URL=redis_server.url,
                SURGEGUARD_CONTROL_POLL_MS="100",
                **{f"SURGEGUARD_{name}_{key}".upper(): value for key, value in values.items()},
            )
            process = spawn(["remote", name, "--port", str(port)], env, tmp_path / f"{name}.log")
            started.append(process)
            remotes[name] = Remote(name, f"http://127.0.0.1:{port}", process)
        for remote in remotes.values():
            wait_healthy(f"{remote.url}/healthz", remote.process, tmp_path / f"{remote.name}.log")
        return remotes

    try:
        yield start
    finally:
        for process in started:
            stop(process)


async def test_one_chaos_write_slows_the_remote_for_every_replica(
    start_target: StartTarget, start_remotes: StartRemotes, writer: ControlPlaneWriter
) -> None:
    remote = start_remotes(recommendations={"capacity": "4", "latency_ms": "20"})["recommendations"]
    replicas = [start_target(recommendations_url=remote.url) for _ in range(2)]
    # No simulated copy in the replicas: nothing there to slow a second time.
    assert all("recommendations" not in r.service.dependencies for r in replicas)
    async with httpx.AsyncClient(timeout=10.0) as http:
        for replica in replicas:
            calm = await http.get(f"{replica.url}/recommendations", headers=API_KEY)
            assert calm.status_code == 200 and len(calm.json()["items"]) == 5
        before = await remote.scrape(http)
        assert before.answered("recommendations") == 2  # both replicas', at the one remote

        # x10: each call is 200 ms of work at the remote, more than the 100 ms bucket
        state = await writer.set_chaos("recommendations", Chaos(latency_multiplier=10.0))
        await eventually(
            lambda: remote.shows(http, api.CHAOS_LATENCY_MULTIPLIER, 10.0),
            timeout_s=10.0,
            what="the remote applies the chaos",
        )
        for replica in replicas:
            slow = await http.get(f"{replica.url}/recommendations", headers=API_KEY)
            assert slow.status_code == 200, slow.text
            # the replica read the same document too, and found nothing in it to refuse
            ready = (await http.get(f"{replica.url}/readyz")).json()["control_plane"]
            assert ready["version"] == state.version and ready["last_error"] is None
        slowed = await remote.scrape(http)

        state = await writer.set_chaos("recommendations", Chaos(error_rate=1.0))
        await eventually(
            lambda: remote.shows(http, api.CHAOS_ERROR_RATE, 1.0),
            timeout_s=10.0,
            what="the remote fails every call",
        )
        feed = await http.get(f"{replicas[0].url}/feed", headers=API_KEY)
        refused = await http.get(f"{replicas[1].url}/recommendations", headers=API_KEY)
        failed = await remote.scrape(http)

    def calls(scrape: Scrape, le: str) -> float:
        return scrape.value(f"{api.CALL_SECONDS}_bucket", dependency="recommendations", le=le)

    # The remote's own measure: both replicas' calls took it more than 100 ms each.
    assert calls(slowed, "+Inf") - calls(before, "+Inf") == 2
    assert calls(slowed, "0.1") == calls(before, "0.1")
    assert feed.status_code == 200
    assert "recommendations_unavailable" in feed.headers["X-Degraded"]
    assert feed.json()["recommendations"] == []
    assert refused.status_code == 503 and refused.json()["dependency"] == "recommendations"
    assert failed.answered("recommendations", "error") == 2


async def test_the_replicas_together_get_no_more_than_the_remotes_capacity(
    start_target: StartTarget, start_remotes: StartRemotes
) -> None:
    capacity, latency_s = 1, 0.040  # at most 25 calls a second, for all replicas together
    remote = start_remotes(
        recommendations={"capacity": str(capacity), "latency_ms": str(latency_s * 1000)}
    )["recommendations"]
    replicas = [start_target(recommendations_url=remote.url) for _ in range(2)]
    name = remote.name
    done = asyncio.Event()

    async def user(http: httpx.AsyncClient, url: str) -> None:
        while not done.is_set():
            await http.get(f"{url}/recommendations", headers=API_KEY)

    async with httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=None)) as http:
        # Six users per replica, each calling again as soon as answered: more than the
        # remote can serve (six per replica stay within each one's bulkhead of 8).
        users = [asyncio.create_task(user(http, r.url)) for r in replicas for _ in range(6)]
        try:

            async def saturated() -> bool:
                peak = (await remote.scrape(http)).value(api.PEAK_IN_SERVICE, dependency=name)
                return peak > capacity

            await eventually(saturated, timeout_s=20.0, what="the remote is past its capacity")
            started = time.monotonic()  # before the remote's first look
            first = await remote.scrape(http)
            await eventually(
                lambda: _answered_since(remote, http, first, 20),
                timeout_s=20.0,
                what="20 more calls answered",
            )
            last = await remote.scrape(http)
            window_s = time.monotonic() - started  # after its last look
        finally:
            done.set()
            await asyncio.gather(*users)
        settled = await remote.scrape(http)

    # Work conservation at the remote: in the window it did at most capacity x window
    # seconds of work, latency_s for each call it received in it; the calls inside at
    # its first look (received, not yet answered) may finish in it too. A loaded machine
    # only makes the remote slower, never faster than this.
    received = first.value(api.CALLS_RECEIVED_TOTAL, dependency=name)
    inside = received - first.answered(name) - first.answered(name, "error")
    answered = last.answered(name) - first.answered(name)
    assert answered <= inside + capacity * window_s / latency_s, (answered, inside, window_s)
    # ...and those were both replicas' calls: every one they were answered went there.
    served = [_answered(r.service.bulkheads[name].stats()) for r in replicas]
    assert all(n > 0 for n in served), served
    assert settled.answered(name) >= sum(served)


async def test_a_slow_or_stopped_remote_is_a_degraded_feed_and_a_503_naming_payments(
    start_target: StartTarget, start_remotes: StartRemotes, writer: ControlPlaneWriter
) -> None:
    remotes = start_remotes(recommendations={}, payments={"latency_ms": "20"})
    replica = start_target(
        recommendations_url=remotes["recommendations"].url,
        payments_url=remotes["payments"].url,
        dependency_timeout_ms=1000,
    )
    # The test's own timeout, 10 s, is far past the replica's 1 s: a hang fails the test.
    async with httpx.AsyncClient(base_url=replica.url, timeout=10.0) as http:
        order = await http.post("/orders", json=ORDER, headers=API_KEY)
        assert order.status_code == 201, order.text
        assert len(order.json()["charge_id"]) == 32
        feed = await http.get("/feed", headers=API_KEY)
        assert feed.json()["recommendations"] and "X-Degraded" not in feed.headers

        # Slow: 20 ms x 100 = 2 s of work a charge, past the replica's 1 s.
        await writer.set_chaos("payments", Chaos(latency_multiplier=100.0))
        await eventually(
            lambda: remotes["payments"].shows(http, api.CHAOS_LATENCY_MULTIPLIER, 100.0),
            timeout_s=10.0,
            what="payments applies the chaos",
        )
        slow = await http.post("/orders", json=ORDER, headers=API_KEY)

        for remote in remotes.values():
            stop(remote.process)
        degraded = await http.get("/feed", headers=API_KEY)
        refused = await http.post("/orders", json=ORDER, headers=API_KEY)

    assert slow.status_code == 503 and slow.json()["dependency"] == "payments", slow.text
    assert degraded.status_code == 200
    assert "recommendations_unavailable" in degraded.headers["X-Degraded"]
    assert degraded.json()["recommendations"] == []
    assert degraded.json()["items"] == feed.json()["items"]
    assert refused.status_code == 503, refused.text
    assert refused.json()["dependency"] == "payments"
    assert "payments" in refused.json()["detail"]
    assert refused.headers["Retry-After"].isdigit()


async def _answered_since(remote: Remote, http: httpx.AsyncClient, first: Scrape, n: int) -> bool:
    now = await remote.scrape(http)
    return now.answered(remote.name) >= first.answered(remote.name) + n


def _answered(stats: BulkheadStats) -> int:
    """Calls a replica's bulkhead saw answered (not refused, cut off or failed)."""
    return stats.calls - stats.rejected_full - stats.timed_out - stats.errors - stats.in_flight
