"""The demo's remote APIs on their own (issue 15): each one a real uvicorn server with
its own routes, bad input a 422 naming the field, its chaos from the control document
(kept when Redis or the document goes), and the replica's caller turning any trouble
into the dependency's error. ``surgeguard remote`` refuses a bad NAME in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from surgeguard.chaos import CALM, Chaos
from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import SettingsError
from surgeguard_target_app.dependencies import DependencyError
from surgeguard_target_app.remote import api
from surgeguard_target_app.remote.api import RemoteName
from surgeguard_target_app.remote.app import RemoteService
from surgeguard_target_app.remote.chaos import ChaosFollower
from surgeguard_target_app.remote.client import RemoteCaller, remote_http
from surgeguard_target_app.remote.settings import RemoteSettings
from surgeguard_target_app.settings import DemoSettings
from tests.support.processes import clean_env, free_port
from tests.support.servers import ServerThread

ORDER_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def remote() -> Iterator[dict[RemoteName, ServerThread]]:
    """Both remote APIs (no Redis: calm), each on its own real server."""
    settings = RemoteSettings.load(recommendations_latency_ms=1.0, payments_latency_ms=1.0)
    servers = {
        name: ServerThread(RemoteService(name, settings, None).asgi) for name in api.REMOTE_NAMES
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _fields(response: httpx.Response) -> list[str]:
    """The input fields a 422 names (FastAPI's ``loc``, without where it came from)."""
    assert response.status_code == 422, response.text
    return [str(error["loc"][-1]) for error in response.json()["detail"]]


def test_recommendations_answer_a_user_and_refuse_bad_input(
    remote: dict[RemoteName, ServerThread],
) -> None:
    with httpx.Client(base_url=remote["recommendations"].url, timeout=5.0) as http:
        answer = http.get("/v1/users/42/recommendations", params={"limit": 3})
        assert answer.status_code == 200
        assert answer.json() == {"user_id": 42, "items": api.recommended_items(42, 3)}
        assert _fields(http.get("/v1/users/0/recommendations")) == ["user_id"]
        assert _fields(http.get("/v1/users/abc/recommendations")) == ["user_id"]
        assert _fields(http.get("/v1/users/1/recommendations", params={"limit": 51})) == ["limit"]
        # one API per process: this one does not take charges
        assert http.post("/v1/charges", json={}).status_code == 404
        assert http.get("/healthz").json() == {"status": "ok", "service": "recommendations"}
        metrics = http.get("/metrics").text
    assert 'surgeguard_remote_calls_total{dependency="recommendations",outcome="ok"} 1.0' in metrics
    assert 'surgeguard_remote_capacity{dependency="recommendations"} 4.0' in metrics


def test_payments_charge_an_order_and_refuse_bad_input(
    remote: dict[RemoteName, ServerThread],
) -> None:
    with httpx.Client(base_url=remote["payments"].url, timeout=5.0) as http:
        charged = http.post("/v1/charges", json={"order_id": ORDER_ID, "amount_cents": 250})
        assert charged.status_code == 201
        assert charged.json()["order_id"] == ORDER_ID
        assert charged.json()["status"] == "captured"
        assert len(charged.json()["charge_id"]) == 32
        bad_id = {"order_id": "not-an-order", "amount_cents": 250}
        assert _fields(http.post("/v1/charges", json=bad_id)) == ["order_id"]
        free = {"order_id": ORDER_ID, "amount_cents": 0}
        assert _fields(http.post("/v1/charges", json=free)) == ["amount_cents"]
        assert sorted(_fields(http.post("/v1/charges", json={}))) == ["amount_cents", "order_id"]
        assert http.get("/v1/users/1/recommendations").status_code == 404


async def test_the_callers_side_is_a_dependency_error_naming_it(
    remote: dict[RemoteName, ServerThread],
) -> None:
    async with remote_http(max_connections=4, timeout_s=2.0) as http:
        good = RemoteCaller("recommendations", remote["recommendations"].url, http)
        assert (await good.request("GET", "/v1/users/5/recommendations"))["user_id"] == 5
        with pytest.raises(DependencyError, match="answered 422") as refused:
            await good.request("GET", "/v1/users/0/recommendations")
        assert refused.value.name == "recommendations"
        gone = RemoteCaller("payments", f"http://127.0.0.1:{free_port()}", http)
        with pytest.raises(DependencyError, match="unreachable") as unreachable:
            await gone.request("POST", api.CHARGES_PATH, body={})
        assert unreachable.value.name == "payments"


async def test_the_remote_follows_its_chaos_and_keeps_it_when_redis_or_the_document_goes(
    redis_server: EmbeddedRedis, redis_client: object
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    applied: list[Chaos] = []
    follower = ChaosFollower(client, "payments", applied.append)
    try:
        writer = ControlPlaneWriter(client, writer="test")
        await writer.set_chaos("recommendations", Chaos(latency_multiplier=3.0))
        assert await follower.refresh() and applied == []  # another API's chaos
        await writer.set_chaos("payments", Chaos(error_rate=1.0))
        await writer.set_chaos("payments", Chaos(error_rate=0.5))  # only the latest counts
        assert await follower.refresh() and applied == [Chaos(error_rate=0.5)]
        await writer.set_chaos("payments", CALM)
        assert await follower.refresh() and applied == [Chaos(error_rate=0.5), CALM]
        await writer.set_chaos("payments", Chaos(latency_multiplier=4.0))
        assert await follower.refresh() and follower.chaos == Chaos(latency_multiplier=4.0)
        await client.flushall()  # the document is gone: keep what was applied
        assert await follower.refresh() and follower.chaos == Chaos(latency_multiplier=4.0)
    finally:
        await client.aclose()
    away = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}")
    stranded = ChaosFollower(away, "payments", applied.append)
    stranded.chaos = Chaos(latency_multiplier=2.0)
    try:
        assert not await stranded.refresh()
    finally:
        await away.aclose()
    assert stranded.chaos == Chaos(latency_multiplier=2.0)
    assert "keeping chaos latency x2" in stranded.last_error


def test_a_replica_refuses_a_remote_url_that_is_not_http() -> None:
    with pytest.raises(SettingsError, match=r"--payments-url='ftp://payments\.example'.*http"):
        DemoSettings.load(payments_url="ftp://payments.example")
    assert DemoSettings.load(payments_url="").remote_url("payments") is None


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["remote", "bogus"], {}, ["NAME", "recommendations, payments", "'bogus'"]),
        (["remote", "payments"], {"SURGEGUARD_PAYMENTS_CAPACITY": "0"}, ["PAYMENTS_CAPACITY"]),
    ],
)
def test_surgeguard_remote_refuses_bad_input_in_one_line(
    args: list[str], env: dict[str, str], named: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "surgeguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**env),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("surgeguard remote: ")
    for name in named:
        assert name in lines[0]
