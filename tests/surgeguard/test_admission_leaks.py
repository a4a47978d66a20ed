"""The door never leaks a slot or a place, over real HTTP (issue 13).

A real uvicorn server on an ephemeral port runs the door as ``surgeguard.protect``
assembles it (door -> body limit -> app) in front of a tiny app that counts what
reaches it and can hold requests on a gate. Every request that ends (answered,
refused, failed, abandoned, cancelled, too slow) gives back what it took, and an idle
replica afterwards admits at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import StreamingResponse

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.asgi import ASGIApp, Receive, Scope, Send
from surgeguard.body_limit import BodySizeLimitMiddleware
from surgeguard.limiter import Limiter
from surgeguard.metrics import AdmissionMetrics
from surgeguard.penalty_box import PenaltyBox
from surgeguard.priority import Priority
from tests.support.asgi import serve_lifespan
from tests.support.polling import until_truthy
from tests.support.servers import ServerThread

ROUTES = RouteTable(
    {
        "/work": Route("work", Priority.NORMAL),
        "/boom": Route("boom", Priority.NORMAL),
        "/stream": Route("stream", Priority.NORMAL),
        "/raw-stream": Route("raw_stream", Priority.NORMAL),
    }
)
MAX_BODY = 64 * 1024
BODY_TIMEOUT_S = 0.3


class App:
    """/work reads its body, waits on ``gate`` while it is closed, answers 200.
    /boom raises. /stream streams until its client leaves (Starlette notices).
    /raw-stream streams for ever and never reads ``receive`` (``streams_ended``
    counts how many stopped: their ``send`` raised)."""

    def __init__(self) -> None:
        self.started = 0
        self.bodies: list[int] = []
        self.gate: asyncio.Event | None = None
        self.streams_ended = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        self.started += 1
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("the handler failed")
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.bodies.append(len(body))
        if path == "/raw-stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:
                    await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                    await asyncio.sleep(0.02)
            finally:
                self.streams_ended += 1
        if path == "/stream":
            await StreamingResponse(_forever())(scope, receive, send)
            return
        if self.gate is not None:
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def _forever() -> AsyncIterator[bytes]:
    while True:
        yield b"tick\n"
        await asyncio.sleep(0.02)


class RequestDeadline:
    """A common outer middleware: a request still running after ``seconds`` is
    cancelled (here, while it waits in the door's queue). Only requests that ask for
    it (``X-Deadline``), so the one holding the slot keeps it."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (b"x-deadline", b"1") not in scope["headers"]:
            await self.app(scope, receive, send)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 504, "headers": []})
        await send({"type": "http.response.body", "body": b"deadline"})


class Door:
    def __init__(self, server: ServerThread, app: App, limiter: Limiter) -> None:
        self.server, self.app, self.limiter, self.url = server, app, limiter, server.url
        self.port = server.port

    def set_gate(self, closed: bool) -> None:
        async def change() -> None:
            if closed:
                self.app.gate = asyncio.Event()
            elif self.app.gate is not None:
                self.app.gate.set()
                self.app.gate = None

        self.server.call(change())

    def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        until_truthy(condition, timeout_s, what, every_s=0.005)

    def idle_admits(self) -> None:
        """Nothing in flight, nobody waiting, and a request is served at once."""
        self.until(lambda: self.limiter.in_flight == 0, "every slot back")
        assert self.limiter.waiting == 0
        with httpx.Client(base_url=self.url, timeout=5) as client:
            response = client.get("/work")
        assert response.status_code == 200, response.text
        self.until(lambda: self.limiter.in_flight == 0, "its slot back")


@pytest.fixture
def door() -> Iterator[Callable[..., Door]]:
    servers: list[ServerThread] = []

    def build(
        *,
        limit: int = 1,
        queue_limit: int = 8,
        queue_timeout_s: float = 5.0,
        deadline_s: float | None = None,
        box: PenaltyBox | None = None,
        client_share: float = 1.0,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> Door:
        app = App()
        limiter = Limiter(limit, queue_limit, queue_timeout_s, client_share=client_share)
        metrics = AdmissionMetrics(CollectorRegistry(), slo_seconds=0.25, routes=ROUTES.names)
        asgi: ASGIApp = AdmissionMiddleware(
            BodySizeLimitMiddleware(app, MAX_BODY, timeout_s=body_timeout_s),
            limiter,
            ROUTES,
            metrics,
            penalty_box=box,
            retry_after_s=(1, 1),
            max_body_bytes=MAX_BODY,
        )
        if deadline_s is not None:
            asgi = RequestDeadline(asgi, deadline_s)
        server = ServerThread(asgi).start()
        servers.append(server)
        return Door(server, app, limiter)

    yield build
    for server in servers:
        server.stop()


@contextlib.contextmanager
def slot_held(d: Door) -> Iterator[None]:
    """Every slot (here mostly the only one) held by a GET /work on a closed gate; on
    exit they finish."""
    d.set_gate(closed=True)
    done: list[int] = []

    def hold() -> None:
        with httpx.Client(base_url=d.url, timeout=30) as client:
            done.append(client.get("/work").status_code)

    holders = [threading.Thread(target=hold) for _ in range(d.limiter.limit)]
    for holder in holders:
        holder.start()
    d.until(lambda: d.limiter.in_flight == d.limiter.limit, "the slots taken")
    try:
        yield
    finally:
        d.set_gate(closed=False)
        for holder in holders:
            holder.join(10)
    assert done == [200] * len(holders)


def connect(d: Door) -> socket.socket:
    return socket.create_connection(("127.0.0.1", d.port), timeout=10)


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response with a Content-Length (what a 4xx here has)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = next(
        (int(x.split(b":", 1)[1]) for x in lines if x.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(b" ")[1]), body


# -- places in the queue --------------------------------------------------------------------


def test_requests_cancelled_or_abandoned_while_queued_leave_no_ghosts(
    door: Callable[..., Door],
) -> None:
    """An outer request deadline cancels queued requests (their tasks); other clients
    hang up while queued. Before the fix every cancelled waiter kept its place for
    good: the idle replica then answered every request 429 (queue_timeout/queue_full)."""
    d = door(limit=1, queue_limit=4, queue_timeout_s=5.0, deadline_s=0.2)
    with slot_held(d):
        with httpx.Client(base_url=d.url, timeout=10) as client:
            cancelled = [
                client.get("/work", headers={"X-Deadline": "1"}).status_code for _ in range(3)
            ]  # 0.2 s each
        assert cancelled == [504] * 3
        assert d.limiter.waiting == 0
        with contextlib.ExitStack() as leavers:
            for _ in range(3):
                sock = leavers.enter_context(connect(d))
                sock.sendall(b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n")
            d.until(lambda: d.limiter.waiting == 3, "three queued")
        d.until(lambda: d.limiter.waiting == 0, "the leavers gone from the queue")
    d.idle_admits()
    assert d.app.started == 2  # the holder and the last request: no ghost ran


def test_a_client_whose_waits_time_out_is_not_refused_its_share_later(
    door: Callable[..., Door],
) -> None:
    """A client may hold 1 of 2 slots (share 0.5) while the service is busy. Waits that
    timed out must not count against it: before, a leaked hold made every later
    request of that client a 429 client_share whenever the service was busy."""
    d = door(limit=2, queue_limit=4, queue_timeout_s=0.05, client_share=0.5)
    key = {"X-Api-Key": "k1"}
    with slot_held(d), httpx.Client(base_url=d.url, timeout=10, headers=key) as client:
        reasons = [client.get("/work").json()["reason"] for _ in range(3)]
    assert reasons == ["queue_timeout"] * 3
    d.idle_admits()


# -- slots ----------------------------------------------------------------------------------


def test_a_handler_that_raises_gives_its_slot_back(door: Callable[..., Door]) -> None:
    d = door(limit=2)
    with httpx.Client(base_url=d.url, timeout=10) as client:
        assert [client.get("/boom").status_code for _ in range(4)] == [500] * 4
    d.idle_admits()


def test_a_client_that_leaves_while_its_response_streams_gives_its_slot_back(
    door: Callable[..., Door],
) -> None:
    """A streaming response runs until its client leaves; its slot comes back then."""
    d = door(limit=1, queue_limit=0)
    with connect(d) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert d.limiter.in_flight == 1
    d.idle_admits()


def test_a_client_that_leaves_a_stream_the_app_never_listens_on_gives_its_slot_back(
    door: Callable[..., Door],
) -> None:
    """uvicorn drops what is sent to a closed connection without a word, so an app
    that streams and never reads ``receive`` streamed to nobody for ever, holding its
    slot (here the only one): the door now watches, and its ``send`` raises."""
    d = door(limit=1, queue_limit=0)
    with connect(d) as sock:
        sock.sendall(b"GET /raw-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert d.limiter.in_flight == 1
    d.idle_admits()
    assert d.app.streams_ended == 1


def test_a_streaming_response_is_not_cut_by_the_body_deadline(door: Callable[..., Door]) -> None:
    """The body deadline ends with the body: a POST whose response streams for longer
    than it (listening on receive for its client to leave) keeps streaming."""
    d = door(limit=1)
    with connect(d) as sock:
        sock.sendall(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        received = b""
        stop = time.monotonic() + 3 * BODY_TIMEOUT_S
        while time.monotonic() < stop:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        assert b"408" not in received and received.count(b"tick") >= 10
    d.idle_admits()


# -- request bodies while waiting -----------------------------------------------------------


def _push(sock: socket.socket, total: int, sent: list[int]) -> None:
    """Send a chunked body of ``total`` bytes until the server stops taking it."""
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    with contextlib.suppress(OSError):  # reset or timed out: the server stopped reading
        while sent[0] < total:
            sock.sendall(chunk)
            sent[0] += 65536


def test_a_body_sent_while_queued_is_refused_at_the_limit_and_read_no_further(
    door: Callable[..., Door],
) -> None:
    """Before the fix the door buffered a queued request's whole body (300 MiB seen
    against a 64 KiB limit) and only the app's limit, after admission, refused it."""
    d = door(limit=1, queue_limit=4)
    total = 64 * 1024 * 1024
    with slot_held(d):
        with connect(d) as sock:
            sock.settimeout(5)
            sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = [0]
            pusher = threading.Thread(target=_push, args=(sock, total, sent))
            pusher.start()
            status, body = read_status(sock)  # while the only slot is still held
            pusher.join(10)
        assert status == 413 and b"payload_too_large" in body
        assert d.limiter.in_flight == 1 and d.limiter.waiting == 0
        # The server stopped reading soon after the limit (kernel buffers aside).
        assert sent[0] < 16 * 1024 * 1024, f"the server took {sent[0]} bytes"
        assert d.limiter.disconnected == 0  # refused, not a client that left
    d.idle_admits()
    assert d.app.bodies == []  # nothing of it reached the app


def test_a_declared_body_over_the_limit_takes_no_place_in_the_queue(
    door: Callable[..., Door],
) -> None:
    d = door(limit=1, queue_limit=4)
    with slot_held(d):
        with connect(d) as sock:
            sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            status, _ = read_status(sock)
        assert status == 413
        assert d.limiter.waiting == 0 and sum(d.limiter.rejected.values()) == 0
    d.idle_admits()


def test_a_body_sent_while_held_in_the_penalty_box_is_refused_at_the_limit(
    door: Callable[..., Door],
) -> None:
    box = PenaltyBox(max_retry_after_s=8, max_held=10)
    d = door(limit=1, queue_limit=0, box=box)
    with slot_held(d):
        with connect(d) as sock:
            sock.sendall(b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_status(sock)[0] == 429  # told to wait 1 s
            sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = [0]
            pusher = threading.Thread(target=_push, args=(sock, 64 * 1024 * 1024, sent))
            pusher.start()
            status, _ = read_status(sock)
            pusher.join(10)
        assert status == 413
        assert sent[0] < 16 * 1024 * 1024, f"the server took {sent[0]} bytes"
    d.until(lambda: box.held == 0, "the hold over")
    assert d.app.bodies == []


# -- slow bodies ----------------------------------------------------------------------------


def test_a_body_that_stalls_gets_408_within_the_deadline_and_frees_its_slot(
    door: Callable[..., Door],
) -> None:
    """Before the fix a client that sent half a body and stopped held its slot for as
    long as it liked (here: the only one)."""
    d = door(limit=1, queue_limit=0)
    with connect(d) as sock:
        sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        d.until(lambda: d.limiter.in_flight == 1, "admitted")
        started = time.monotonic()
        status, body = read_status(sock)
        waited = time.monotonic() - started
        assert status == 408 and b"request_timeout" in body
        # Not held as long as the client likes: a bound no loaded machine reaches, far
        # below the stalled client's patience (for ever).
        assert waited < 10.0, waited
        assert sock.recv(65536) == b""  # and the connection closed
    d.idle_admits()
    assert d.app.bodies == []  # the app never acted on half a body


def test_a_body_that_arrives_in_pieces_within_the_deadline_is_served(
    door: Callable[..., Door],
) -> None:
    # A deadline far longer than the pause, so a busy machine cannot make it run out.
    d = door(limit=1, body_timeout_s=10.0)
    with connect(d) as sock:
        sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        time.sleep(0.2)  # the client's pause between two pieces of its body
        sock.sendall(b"cdef")
        assert read_status(sock)[0] == 200
    assert d.app.bodies == [6]
