"""AdmissionMiddleware over real HTTP: a real uvicorn server on an ephemeral port.

The app behind the door is a tiny ASGI app that records how many requests it runs
at once and can hold them on a gate, so the tests decide when work finishes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.asgi import Receive, Scope, Send
from surgeguard.limiter import Limiter
from surgeguard.metrics import AdmissionMetrics
from surgeguard.modes import READ_ONLY, SHED_SHEDDABLE
from surgeguard.priority import Priority
from tests.support.asgi import serve_lifespan
from tests.support.servers import ServerThread

ROUTES = RouteTable(
    {"/work": Route("work", Priority.NORMAL), "/order": Route("order", Priority.CRITICAL)}
)


class GatedApp:
    """Counts concurrent requests; holds each until ``gate`` is set (if closed)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started = 0
        self.gate: asyncio.Event | None = None
        self.limiter: Limiter | None = None
        self.peak_waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        self.started += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.limiter is not None:
            self.peak_waiting = max(self.peak_waiting, self.limiter.waiting)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0.002)  # a little work so requests overlap
        finally:
            self.running -= 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"done"})


class Door:
    def __init__(
        self, server: ServerThread, app: GatedApp, limiter: Limiter, middleware: AdmissionMiddleware
    ) -> None:
        self.server, self.app, self.limiter, self.middleware = server, app, limiter, middleware
        self.url = server.url

    def close_gate(self) -> None:
        async def close() -> None:
            self.app.gate = asyncio.Event()

        self.server.call(close())

    def open_gate(self) -> None:
        async def open_() -> None:
            assert self.app.gate is not None
            self.app.gate.set()

        self.server.call(open_())

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.005)


@pytest.fixture
def door() -> Iterator[Callable[..., Door]]:
    servers: list[ServerThread] = []

    def build(
        limit: int = 4, queue_limit: int = 8, timeout_s: float = 5.0, **limiter_kwargs: float
    ) -> Door:
        app = GatedApp()
        limiter = Limiter(limit, queue_limit, timeout_s, **limiter_kwargs)
        app.limiter = limiter
        metrics = AdmissionMetrics(CollectorRegistry(), slo_seconds=0.25, routes=ROUTES.names)
        middleware = AdmissionMiddleware(app, limiter, ROUTES, metrics)
        server = ServerThread(middleware).start()
        servers.append(server)
        return Door(server, app, limiter, middleware)

    yield build
    for server in servers:
        server.stop()


async def _fire(
    url: str, n: int, headers: dict[str, str] | None = None, path: str = "/work"
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:
        return list(await asyncio.gather(*(client.get(path, headers=headers) for _ in range(n))))


def test_in_flight_and_waiting_never_exceed_their_limits_under_load(
    door: Callable[..., Door],
) -> None:
    d = door(limit=5, queue_limit=10, timeout_s=0.05)
    responses = asyncio.run(_fire(d.url, 300))
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 429}
    assert 200 in statuses and 429 in statuses  # the load really was too much
    assert d.app.peak <= 5
    assert d.limiter.peak_in_flight <= 5
    assert d.app.peak_waiting <= 10
    rejected = [r for r in responses if r.status_code == 429]
    for r in rejected:
        assert 1 <= int(r.headers["retry-after"]) <= 3
        assert r.json()["reason"] in {"queue_full", "queue_timeout"}
    # A rejection never reached the app.
    assert d.app.started == sum(r.status_code == 200 for r in responses)


def test_retry_after_is_jittered(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=0)
    d.close_gate()

    async def scenario() -> set[str]:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 1)
            seen = {(await client.get("/work")).headers["retry-after"] for _ in range(60)}
            d.open_gate()
            assert (await held).status_code == 200
            return seen

    assert len(asyncio.run(scenario())) >= 2


def test_sheddable_is_shed_before_critical(door: Callable[..., Door]) -> None:
    d = door(limit=2, queue_limit=10, sheddable_queue_share=0.5)
    d.close_gate()

    async def scenario() -> tuple[list[int], list[int]]:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=d.url, timeout=20, limits=limits) as client:
            blockers = [asyncio.create_task(client.get("/work")) for _ in range(2)]
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 2)
            sheddable = [
                asyncio.create_task(client.get("/work", headers={"X-Priority": "sheddable"}))
                for _ in range(10)
            ]
            await asyncio.to_thread(
                d.wait_until, lambda: d.limiter.waiting + d.limiter.rejected["priority"] == 10
            )
            critical = [
                asyncio.create_task(client.get("/work", headers={"X-Priority": "critical"}))
                for _ in range(10)
            ]
            await asyncio.to_thread(
                d.wait_until,
                lambda: (
                    d.limiter.waiting == 10
                    and d.limiter.stats().waiting_by_priority["critical"] == 10
                ),
            )
            d.open_gate()
            await asyncio.gather(*blockers)
            return (
                [(await t).status_code for t in sheddable],
                [(await t).status_code for t in critical],
            )

    shed, crit = asyncio.run(scenario())
    assert crit == [200] * 10
    assert shed == [429] * 10


def test_unknown_priority_counts_as_normal(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=4, sheddable_queue_share=0.0)
    d.close_gate()

    async def scenario() -> int:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 1)
            odd = asyncio.create_task(client.get("/work", headers={"X-Priority": "urgent!!"}))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.waiting == 1)
            d.open_gate()
            await held
            return (await odd).status_code

    # Sheddable may not queue at all here (share 0), so a queued request was normal.
    assert asyncio.run(scenario()) == 200


def test_queue_timeout_answers_429(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=5, timeout_s=0.05)
    d.close_gate()

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 1)
            late = await client.get("/work")
            d.open_gate()
            await held
            return late

    late = asyncio.run(scenario())
    assert late.status_code == 429
    assert late.json()["reason"] == "queue_timeout"
    assert d.app.started == 1


def test_raising_the_limit_at_runtime_admits_waiters_at_once(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=5, timeout_s=30)
    d.close_gate()

    async def raise_limit() -> None:
        d.limiter.set_limits(limit=4)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            tasks = [asyncio.create_task(client.get("/work")) for _ in range(4)]
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.waiting == 3)
            d.server.call(raise_limit())
            await asyncio.to_thread(d.wait_until, lambda: d.app.running == 4)
            d.open_gate()
            assert [(await t).status_code for t in tasks] == [200] * 4

    asyncio.run(scenario())


def test_a_waiting_request_whose_client_left_is_dropped(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=5, timeout_s=30)
    d.close_gate()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 1)
            sock = socket.create_connection(("127.0.0.1", d.server.port))
            sock.sendall(b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.waiting == 1)
            sock.close()
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.disconnected == 1)
            assert d.limiter.waiting == 0
            d.open_gate()
            assert (await held).status_code == 200

    asyncio.run(scenario())
    assert d.app.started == 1  # the abandoned request never ran


def test_health_bypasses_admission_while_saturated(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=0)
    d.close_gate()

    async def scenario() -> tuple[int, int, int]:
        async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(d.wait_until, lambda: d.limiter.in_flight == 1)
            work = (await client.get("/work")).status_code
            health = (await client.get("/healthz")).status_code  # reaches the app
            d.open_gate()
            return work, health, (await held).status_code

    work, health, held = asyncio.run(scenario())
    assert (work, health, held) == (429, 200, 200)


def test_door_modes_reject_without_reaching_the_app(door: Callable[..., Door]) -> None:
    d = door()
    d.middleware.set_modes(frozenset({SHED_SHEDDABLE, READ_ONLY}))
    with httpx.Client(base_url=d.url, timeout=10) as client:
        shed = client.get("/work", headers={"X-Priority": "sheddable"})
        write = client.post("/order", content=b"{}")
        read = client.get("/order")
    assert shed.status_code == 429 and shed.json()["reason"] == "mode"
    assert write.status_code == 503 and "read-only" in write.json()["detail"]
    assert "retry-after" in write.headers
    assert read.status_code == 200
    assert d.app.started == 1


def test_rejection_body_is_small_json(door: Callable[..., Door]) -> None:
    d = door(limit=1, queue_limit=0)
    d.middleware.set_modes(frozenset({SHED_SHEDDABLE}))
    with httpx.Client(base_url=d.url, timeout=10) as client:
        r = client.get("/work", headers={"X-Priority": "sheddable"})
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content) < 200
    assert json.loads(r.content)["error"] == "rejected"
