"""``AdmissionMiddleware``: the door of the service, first in the ASGI chain.

Per request: find the route and priority, apply the door-level degradation modes,
ask the limiter for a slot, and either run the app or answer at once with a
prebuilt 429/503. No await happens before that decision, and a rejection never
reaches routing. Health, readiness and metrics routes bypass it entirely.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from surgeguard.limiter import DISCONNECTED, MODE, REJECTION_REASONS, Limiter, Waiter
from surgeguard.metrics import REJECTED, AdmissionMetrics, outcome_of
from surgeguard.modes import Mode
from surgeguard.priority import Priority
from surgeguard.rejection import RejectionResponses

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_ONLY_DETAIL = (
    "The service is in read-only mode during a traffic spike: "
    "writes are paused, reads still work. Retry later."
)


@dataclass(frozen=True)
class Route:
    """A metrics name for a family of paths and the priority it gets by default."""

    name: str
    priority: Priority


class RouteTable:
    """Maps a request path to a ``Route`` (None: bypass admission).

    Exact paths are a dict lookup; prefixes (``/items/``) are tried in order."""

    def __init__(
        self,
        exact: Mapping[str, Route],
        prefixes: Sequence[tuple[str, Route]] = (),
        *,
        default: Route = Route("other", Priority.NORMAL),
        bypass: Iterable[str] = ("/healthz", "/readyz", "/metrics"),
    ) -> None:
        self._exact: dict[str, Route | None] = dict(exact)
        for path in bypass:
            self._exact[path] = None
        self._prefixes = tuple(prefixes)
        self.default = default

    @property
    def names(self) -> tuple[str, ...]:
        routes = {r.name for r in self._exact.values() if r is not None}
        routes |= {r.name for _, r in self._prefixes} | {self.default.name}
        return tuple(sorted(routes))

    def match(self, path: str) -> Route | None:
        try:
            return self._exact[path]
        except KeyError:
            pass
        for prefix, route in self._prefixes:
            if path.startswith(prefix):
                return route
        return self.default


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        routes: RouteTable,
        metrics: AdmissionMetrics,
        *,
        client_header: bytes = b"x-api-key",
        retry_after_s: tuple[int, int] = (1, 3),
        rejections: RejectionResponses | None = None,
        clock: Callable[[], float] = time.perf_counter,
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.routes = routes
        self.metrics = metrics
        self.client_header = client_header
        self.clock = clock
        self.enabled = enabled
        self.shed_sheddable = False
        self.read_only = False
        self.rejections = rejections or RejectionResponses(retry_after_s)
        for reason in REJECTION_REASONS:
            self.rejections.prebuild(429, reason)
        self.rejections.prebuild(503, MODE, READ_ONLY_DETAIL)

    def set_modes(self, modes: frozenset[Mode]) -> None:
        """Door-level modes; the others are the routes' business."""
        self.shed_sheddable = Mode.SHED_SHEDDABLE in modes
        self.read_only = Mode.READ_ONLY in modes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        route = self.routes.match(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return

        priority = route.priority
        client: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-priority":
                priority = Priority.from_header(value, route.priority)
            elif name == self.client_header:
                client = value

        if self.read_only and scope["method"] in _WRITE_METHODS:
            await self._reject(send, route.name, priority, MODE, 503)
            return
        if self.shed_sheddable and priority is Priority.SHEDDABLE:
            await self._reject(send, route.name, priority, MODE, 429)
            return

        clock = self.clock
        ticket = self.limiter.try_acquire(priority, client)
        if ticket is None:
            self.metrics.queue_wait.extra_at_zero += 1  # admitted at once: a wait of 0
        elif isinstance(ticket, str):
            await self._reject(send, route.name, priority, ticket, 429)
            return
        else:
            arrived = clock()
            reason, receive = await self._wait(ticket, receive)
            if reason is not None:
                if reason != DISCONNECTED:
                    await self._reject(send, route.name, priority, reason, 429)
                return
            self.metrics.queue_wait.observe(clock() - arrived)
        admitted = clock()

        status = 500  # what the client sees if the app dies before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.limiter.release(client)
            outcome = outcome_of(status)
            self.metrics.duration[(route.name, outcome)].observe(clock() - admitted)
            self.metrics.requests[(route.name, priority, outcome)].inc()

    async def _reject(
        self, send: Send, route: str, priority: Priority, reason: str, status: int
    ) -> None:
        self.metrics.rejections[(reason, priority)].inc()
        self.metrics.requests[(route, priority, REJECTED)].inc()
        await self.rejections.send(send, status, reason)

    async def _wait(self, waiter: Waiter, receive: Receive) -> tuple[str | None, Receive]:
        """Wait for a slot while watching for the client to go away.

        Messages read while watching (a request body) are replayed to the app."""
        buffered: list[Message] = []
        gone = False

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    self.limiter.abandon(waiter)
                    return
                buffered.append(message)

        watcher = asyncio.create_task(watch())
        try:
            reason = await self.limiter.wait(waiter)
        finally:
            watcher.cancel()
        if gone or reason is not None:
            return (DISCONNECTED if gone else reason), receive

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        return None, replay
