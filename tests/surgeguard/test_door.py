"""The door against hostile and impatient clients, over real HTTP (issue 11).

A real uvicorn server on an ephemeral port runs ``AdmissionMiddleware`` with client
keys and a penalty box in front of a tiny app that counts what reaches it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.asgi import Receive, Scope, Send
from surgeguard.client_keys import ClientKeys
from surgeguard.limiter import Limiter
from surgeguard.metrics import AdmissionMetrics
from surgeguard.penalty_box import PenaltyBox
from surgeguard.priority import Priority
from tests.support.asgi import serve_lifespan
from tests.support.clock import FakeClock
from tests.support.polling import until_truthy
from tests.support.servers import ServerThread

ROUTES = RouteTable(
    {
        "/work": Route("work", Priority.NORMAL),
        "/order": Route("order", Priority.CRITICAL),
        "/public": Route("public", Priority.NORMAL, needs_key=False),
    }
)
KEYS = ClientKeys.parse("vip:critical,partner:normal,batch:sheddable")
VIP = {"X-Api-Key": "vip"}
PARTNER = {"X-Api-Key": "partner"}


class CountingApp:
    """Counts what reaches it; holds requests on ``gate`` while it is closed. Its own
    ``/healthz`` never answers, so a quick one can only come from the door."""

    def __init__(self) -> None:
        self.started = 0
        self.bodies: list[bytes] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            await asyncio.Event().wait()  # wedged
        self.started += 1
        if scope["method"] == "POST":
            self.bodies.append((await receive()).get("body", b""))
        if self.gate is not None:
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


class Door:
    def __init__(self, server: ServerThread, app: CountingApp, **parts: Any) -> None:
        self.server, self.app, self.url = server, app, server.url
        self.limiter: Limiter = parts["limiter"]
        self.box: PenaltyBox | None = parts["box"]
        self.registry: CollectorRegistry = parts["registry"]

    def set_gate(self, closed: bool) -> None:
        async def change() -> None:
            if closed:
                self.app.gate = asyncio.Event()
            elif self.app.gate is not None:
                self.app.gate.set()

        self.server.call(change())

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def door() -> Iterator[Callable[..., Door]]:
    servers: list[ServerThread] = []

    def build(
        *,
        limit: int = 4,
        queue_limit: int = 0,
        retry_after_s: tuple[int, int] = (1, 1),
        box: bool = True,
        max_held: int = 100,
        address_header: bytes | None = None,
        box_clock: Callable[[], float] = time.monotonic,
    ) -> Door:
        app = CountingApp()
        limiter = Limiter(limit, queue_limit, 5.0, client_share=1.0)
        registry = CollectorRegistry()
        metrics = AdmissionMetrics(registry, slo_seconds=0.25, routes=ROUTES.names)
        metrics.bind_limiter(limiter)
        penalty = (
            PenaltyBox(max_retry_after_s=8, max_held=max_held, clock=box_clock) if box else None
        )
        if penalty is not None:
            metrics.bind_penalty_box(penalty, registry)
        middleware = AdmissionMiddleware(
            app,
            limiter,
            ROUTES,
            metrics,
            client_keys=KEYS,
            penalty_box=penalty,
            address_header=address_header,
            retry_after_s=retry_after_s,
            registry=registry,
        )
        server = ServerThread(middleware).start()
        servers.append(server)
        return Door(server, app, limiter=limiter, box=penalty, registry=registry)

    yield build
    for server in servers:
        server.stop()


def fresh(d: Door, **kwargs: Any) -> httpx.Client:
    """A client of its own (its own connection, so its own penalty-box identity)."""
    return httpx.Client(base_url=d.url, timeout=30.0, **kwargs)


# -- authorize at the door ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "stranger"}], ids=["missing", "unknown"])
def test_no_key_or_an_unknown_key_never_reaches_the_app_nor_takes_a_slot(
    door: Callable[..., Door], headers: dict[str, str]
) -> None:
    d = door(limit=1, queue_limit=5)
    d.set_gate(closed=True)
    with fresh(d) as holder, fresh(d) as stranger:
        # One legitimate request holds the only slot; the queue has room for 5.
        served: list[int] = []
        worker = threading.Thread(
            target=lambda: served.append(holder.get("/work", headers=VIP).status_code)
        )
        worker.start()
        deadline = time.monotonic() + 10
        while d.limiter.in_flight < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = stranger.get("/work", headers={**headers, "X-Priority": "critical"})
        assert response.status_code == 401
        assert response.json()["reason"] == "unauthorized"
        assert response.headers["www-authenticate"] == "ApiKey"
        # Neither a slot nor a place in the queue, and the app never saw it.
        assert d.limiter.waiting == 0 and d.limiter.admitted == 1
        assert d.app.started == 1
        d.set_gate(closed=False)
        worker.join(10)
    assert served == [200]
    assert d.sample("surgeguard_rejections_total", reason="unauthorized", priority="normal") == 1


def test_a_public_route_needs_no_key(door: Callable[..., Door]) -> None:
    d = door()
    with fresh(d) as client:
        assert client.get("/public").status_code == 200
    assert d.app.started == 1


def test_two_client_key_headers_get_400_and_never_reach_the_app(door: Callable[..., Door]) -> None:
    d = door()
    with fresh(d) as client:
        response = client.get("/work", headers=[("X-Api-Key", "stranger"), ("X-Api-Key", "vip")])
    assert response.status_code == 400
    assert response.json()["reason"] == "duplicate_key"
    assert d.app.started == 0 and d.limiter.admitted == 0


# -- priority is earned, not claimed --------------------------------------------------------


def _requests_by_priority(d: Door, priority: str, route: str = "work") -> float:
    return d.sample("surgeguard_requests_total", route=route, priority=priority, outcome="ok")


def _counted(d: Door, requests: int, route: str = "work") -> None:
    """Wait until the door has counted ``requests`` answered ones: it counts a request
    once its response is sent, so the client may read its answer a moment before."""
    until_truthy(
        lambda: sum(_requests_by_priority(d, p.label, route) for p in Priority) >= requests,
        10,
        f"{requests} requests counted",
        every_s=0.01,
    )


def test_a_claimed_priority_above_the_keys_ceiling_is_served_at_the_ceiling(
    door: Callable[..., Door],
) -> None:
    d = door()
    with fresh(d) as client:
        assert client.get("/work", headers={**PARTNER, "X-Priority": "critical"}).status_code == 200
        assert client.get("/work", headers={**VIP, "X-Priority": "critical"}).status_code == 200
        assert client.get("/work", headers={**VIP, "X-Priority": "sheddable"}).status_code == 200
    _counted(d, 3)
    assert _requests_by_priority(d, "normal") == 1  # partner asked for critical
    assert _requests_by_priority(d, "critical") == 1  # vip may
    assert _requests_by_priority(d, "sheddable") == 1  # anyone may lower it


def test_a_route_default_above_the_ceiling_is_lowered_too(door: Callable[..., Door]) -> None:
    d = door()
    with fresh(d) as client:
        assert client.get("/order", headers={"X-Api-Key": "batch"}).status_code == 200
    _counted(d, 1, route="order")
    assert _requests_by_priority(d, "sheddable", route="order") == 1


def test_a_claimed_critical_cannot_displace_a_waiter_but_a_critical_key_can(
    door: Callable[..., Door],
) -> None:
    """The queue is full of one normal waiter; a real critical request displaces it,
    a partner claiming critical cannot."""
    d = door(limit=1, queue_limit=1)
    d.set_gate(closed=True)

    async def scenario() -> tuple[int, int, int]:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=d.url, timeout=30, limits=limits) as client:
            running = asyncio.create_task(client.get("/work", headers=VIP))  # the slot
            await _until(lambda: d.limiter.in_flight == 1)
            waiting = asyncio.create_task(client.get("/work", headers=PARTNER))
            await _until(lambda: d.limiter.waiting == 1)
            claimed = await client.get("/work", headers={**PARTNER, "X-Priority": "critical"})
            assert claimed.json()["reason"] == "queue_full"
            earned = asyncio.create_task(
                client.get("/work", headers={**VIP, "X-Priority": "critical"})
            )
            displaced = await waiting
            d.set_gate(closed=False)
            assert (await running).status_code == 200
            return claimed.status_code, displaced.status_code, (await earned).status_code

    claimed, displaced, earned = asyncio.run(scenario())
    assert (claimed, displaced, earned) == (429, 429, 200)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# -- the penalty box ------------------------------------------------------------------------


@contextlib.contextmanager
def saturated(d: Door) -> Iterator[None]:
    """Every slot held by a legitimate request on a closed gate, no queue: every
    other request to /work is a 429. On exit the gate opens and the holders finish."""
    d.set_gate(closed=True)
    holders = []
    for _ in range(d.limiter.limit):
        holder = threading.Thread(target=_get_once, args=(d.url,))
        holder.start()
        holders.append(holder)
    deadline = time.monotonic() + 10
    while d.limiter.in_flight < d.limiter.limit:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield
    finally:
        d.set_gate(closed=False)
        for holder in holders:
            holder.join(10)


def _get_once(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/work", headers=VIP)


def test_a_client_that_ignores_retry_after_gets_its_next_answer_no_sooner(
    door: Callable[..., Door],
) -> None:
    d = door(limit=1, retry_after_s=(1, 1))
    with saturated(d):
        with fresh(d) as client:
            # From before the first request: the server's deadline can only be later.
            told = time.monotonic()
            first = client.get("/work", headers=VIP)
            assert first.status_code == 429 and first.headers["retry-after"] == "1"
            second = client.get("/work", headers=VIP)  # at once, ignoring Retry-After
            waited = time.monotonic() - told
        assert second.status_code == 429
        assert waited >= 1.0 - 0.01  # held until the Retry-After it was given had passed
        assert int(second.headers["retry-after"]) > 1  # and told to wait longer next time
        assert d.sample("surgeguard_penalty_box_holds_total") == 1


def test_a_polite_client_sees_no_difference(door: Callable[..., Door]) -> None:
    box_clock = FakeClock()  # the box's time: the client's wait is a clock move
    d = door(limit=1, retry_after_s=(1, 1), box_clock=box_clock)
    with saturated(d):
        with fresh(d) as client:
            first = client.get("/work", headers=VIP)
            assert first.status_code == 429
            box_clock.advance(float(first.headers["retry-after"]))  # it waits as told
            second = client.get("/work", headers=VIP)
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"  # no strike against it
        assert d.sample("surgeguard_penalty_box_holds_total") == 0


def test_an_unauthenticated_flood_is_held_too(door: Callable[..., Door]) -> None:
    d = door(retry_after_s=(1, 1))
    with fresh(d) as attacker:
        told = time.monotonic()
        assert attacker.get("/work").status_code == 401
        again = attacker.get("/work", headers={"X-Priority": "critical"})
        waited = time.monotonic() - told
    assert again.status_code == 401
    assert waited >= 1.0 - 0.01
    assert d.app.started == 0


def test_past_the_bound_an_early_client_gets_429_and_its_connection_closed(
    door: Callable[..., Door],
) -> None:
    d = door(limit=1, retry_after_s=(2, 2), max_held=1)
    with saturated(d):
        with fresh(d) as first, fresh(d) as second:
            assert first.get("/work", headers=VIP).status_code == 429
            assert second.get("/work", headers=VIP).status_code == 429
            held = threading.Thread(target=lambda: first.get("/work", headers=VIP))
            held.start()
            deadline = time.monotonic() + 10
            assert d.box is not None
            while d.box.held < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            turned_away = second.get("/work", headers=VIP)
            held.join(10)
        assert turned_away.status_code == 429
        assert turned_away.json()["reason"] == "penalty_full"
        assert turned_away.headers["connection"] == "close"
        assert (
            d.sample("surgeguard_rejections_total", reason="penalty_full", priority="normal") == 1
        )


def test_a_client_that_reconnects_is_still_held_when_identified_by_its_address(
    door: Callable[..., Door],
) -> None:
    """Behind a trusted proxy the client is its address, not a connection it can drop."""
    d = door(limit=1, retry_after_s=(1, 1), address_header=b"x-real-ip")
    with saturated(d):
        headers = {**VIP, "X-Real-IP": "203.0.113.7"}
        told = time.monotonic()
        with fresh(d) as first:
            assert first.get("/work", headers=headers).status_code == 429
        with fresh(d) as reconnected:  # a new connection, the same address
            assert reconnected.get("/work", headers=headers).status_code == 429
        assert time.monotonic() - told >= 1.0 - 0.01


def test_without_the_address_header_a_forged_address_is_ignored(
    door: Callable[..., Door],
) -> None:
    """A client cannot dodge (or frame someone else) with a header nobody trusts."""
    d = door(limit=1, retry_after_s=(1, 1))
    with saturated(d):
        with fresh(d) as client:
            told = time.monotonic()
            assert (
                client.get("/work", headers={**VIP, "X-Real-IP": "198.51.100.1"}).status_code == 429
            )
            again = client.get("/work", headers={**VIP, "X-Real-IP": "198.51.100.2"})
        assert int(again.headers["retry-after"]) > 1  # the same connection: held, grown
        assert time.monotonic() - told >= 1.0 - 0.01


# -- health and metrics stay answerable -----------------------------------------------------


def test_health_and_metrics_are_answered_by_the_door_while_the_app_is_wedged(
    door: Callable[..., Door],
) -> None:
    d = door(limit=1)
    with saturated(d):
        with fresh(d) as client:
            health = client.get("/healthz", timeout=5.0)
            metrics = client.get("/metrics", timeout=5.0)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert metrics.status_code == 200
        assert "surgeguard_penalty_box_held" in metrics.text
        assert "surgeguard_inflight 1.0" in metrics.text


def test_every_early_request_of_a_raw_socket_flood_is_held_before_it_is_decided(
    door: Callable[..., Door],
) -> None:
    """Twenty connections that each retry at once, three times (the way wrk does):
    every early request is held before the limiter is asked, and none reaches the app."""
    d = door(limit=1, retry_after_s=(1, 1), max_held=1000)
    with saturated(d):
        asked_before = sum(d.limiter.rejected.values())
        request = b"GET /work HTTP/1.1\r\nHost: x\r\nX-Api-Key: vip\r\n\r\n"

        def hammer() -> list[bytes]:
            with socket.create_connection((d.server.host, d.server.port), timeout=60) as sock:
                statuses = []
                for _ in range(3):
                    sock.sendall(request)
                    statuses.append(_read_response(sock))
                return statuses

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: hammer(), range(20)))
        assert results == [[b"HTTP/1.1 429 Too Many Requests"] * 3] * 20
        # 20 connections x 3 requests: the first of each was decided at once, the other
        # two only after a hold each.
        assert d.sample("surgeguard_penalty_box_holds_total") == 40
        assert sum(d.limiter.rejected.values()) - asked_before == 60
        assert d.app.started == 1  # only the request that holds the slot


def _read_response(sock: socket.socket) -> bytes:
    """Read one whole HTTP/1.1 response (with a Content-Length); its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0]


def test_a_client_that_gives_up_while_held_is_never_decided(door: Callable[..., Door]) -> None:
    """Held requests whose clients leave free their place at once, and the limiter is
    not asked on behalf of nobody (a slot could otherwise go to a closed connection)."""
    d = door(limit=1, retry_after_s=(3, 3))
    assert d.box is not None
    with saturated(d):
        request = b"GET /work HTTP/1.1\r\nHost: x\r\nX-Api-Key: vip\r\n\r\n"
        with socket.create_connection((d.server.host, d.server.port), timeout=30) as sock:
            sock.sendall(request)
            assert _read_response(sock) == b"HTTP/1.1 429 Too Many Requests"
            decided = sum(d.limiter.rejected.values())
            sock.sendall(request)  # at once: held for 3 s
            deadline = time.monotonic() + 10
            while d.box.held < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        # The client closed its connection while held.
        deadline = time.monotonic() + 10
        while d.box.held > 0:
            assert time.monotonic() < deadline, "the hold outlived its client"
            time.sleep(0.01)
        # One turn of the server's loop after the hold ended: a decision would have been
        # made in that same turn (no await between the hold's end and the limiter).
        d.server.call(asyncio.sleep(0))
        assert sum(d.limiter.rejected.values()) == decided
        assert d.app.started == 1  # only the request holding the slot


def test_a_held_request_keeps_its_body(door: Callable[..., Door]) -> None:
    """The body read while watching a held client is replayed to the app."""
    d = door(limit=1, retry_after_s=(1, 1))
    with fresh(d) as client:
        with saturated(d):
            assert client.post("/work", headers=VIP, content=b"first").status_code == 429
        # The slot is free now, but this client comes back early: held, then admitted.
        response = client.post("/work", headers=VIP, content=b"payload")
    assert response.status_code == 200
    assert d.sample("surgeguard_penalty_box_holds_total") == 1  # it was held...
    assert d.app.bodies[-1] == b"payload"  # ...and its body reached the app whole
