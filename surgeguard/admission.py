"""``AdmissionMiddleware``: the door of the service, first in the ASGI chain.

Per request, in this order, before any routing:
1. has this client been told to wait? A client (TCP connection, or the address a
   trusted proxy names) that comes back before its ``Retry-After`` is held until
   then (``PenaltyBox``), then decided like any other;
2. who is it? A route that needs a key gets a prebuilt 401 for a missing or unknown
   ``X-Api-Key`` (400 for two of them): it never takes a slot or reaches the app;
3. how important may it be? ``X-Priority`` or the route's default, never above the
   key's ceiling (on a public route: never above the route's default);
4. the door-level degradation modes, then the limiter: run the app, or answer at
   once with a prebuilt 429/503 whose ``Retry-After`` grows for repeat offenders.
No await happens before the decision except a penalty hold. With ``max_body_bytes``
the door also keeps the body limit while a request waits (held or queued): a
declared ``Content-Length`` over it is a 413 before the limiter is asked, and a body
that passes it while waiting is a 413 at once, read no further.
Every admitted request gives its slot back when the app returns or raises. A
response that streams while the app does not listen for its client is watched, and
once the client has gone the app's next ``send`` raises ``ClientDisconnected`` (an
``OSError``, as ASGI 2.4 asks), so it cannot stream to nobody and keep the slot. ``/healthz`` and
``/metrics`` are answered by the door itself; the other bypass routes go straight
to the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from surgeguard import door_answers
from surgeguard.asgi import ASGIApp, Message, Receive, Scope, Send
from surgeguard.body_limit import declared_length, too_large
from surgeguard.client_keys import ClientKeys
from surgeguard.client_watch import ClientDisconnected, ClientWatch, ResponseWatch
from surgeguard.inner.samples import WindowSamples
from surgeguard.limiter import Limiter, Waiter
from surgeguard.metrics import REJECTED, AdmissionMetrics, outcome_of
from surgeguard.modes import READ_ONLY, SHED_SHEDDABLE
from surgeguard.penalty_box import FULL, PenaltyBox
from surgeguard.priority import Priority
from surgeguard.reasons import (
    DISCONNECTED,
    DUPLICATE_KEY,
    LIMITER_REASONS,
    MODE,
    PENALTY_FULL,
    UNAUTHORIZED,
)
from surgeguard.rejection import RejectionResponses

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # as the body limit skips them
_TOO_LARGE = "payload_too_large"  # a wait ended because the body passed max_body_bytes
READ_ONLY_DETAIL = (
    "The service is in read-only mode during a traffic spike: "
    "writes are paused, reads still work. Retry later."
)


@dataclass(frozen=True)
class Route:
    """A metrics name for a family of paths, the priority it gets by default, and
    whether it needs a client key (checked at the door when the door has keys)."""

    name: str
    priority: Priority
    needs_key: bool = True


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
    """The door. ``client_keys``: authorize at the door (None: no door check, keys are
    the app's business). ``penalty_box``: hold clients that ignore ``Retry-After``
    (None: off). ``address_header``: identify a client by this header's value (a
    trusted proxy's ``X-Real-IP``) instead of its TCP connection. ``registry``: answer
    ``/metrics`` at the door from it. ``max_body_bytes``: the body limit the app
    enforces (``BodySizeLimitMiddleware``), kept while a request waits (None: off).
    ``samples``: where each admitted request's latency is recorded for the inner loop
    (None: no inner loop)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        routes: RouteTable,
        metrics: AdmissionMetrics,
        *,
        client_header: bytes = b"x-api-key",
        client_keys: ClientKeys | None = None,
        penalty_box: PenaltyBox | None = None,
        address_header: bytes | None = None,
        retry_after_s: tuple[int, int] = (1, 3),
        rejections: RejectionResponses | None = None,
        registry: CollectorRegistry | None = None,
        health_path: str | None = "/healthz",
        metrics_path: str = "/metrics",
        clock: Callable[[], float] = time.perf_counter,
        enabled: bool = True,
        max_body_bytes: int | None = None,
        samples: WindowSamples | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.routes = routes
        self.metrics = metrics
        self.client_header = client_header
        self.client_keys = client_keys
        self.penalty_box = penalty_box
        self.address_header = address_header.lower() if address_header else None
        self.clock = clock
        self.enabled = enabled
        self.max_body_bytes = max_body_bytes
        self.samples = samples
        self._too_large = too_large(max_body_bytes) if max_body_bytes is not None else None
        self.shed_sheddable = False
        self.read_only = False
        self.rejections = rejections or RejectionResponses(retry_after_s)
        for reason in (*LIMITER_REASONS, UNAUTHORIZED, PENALTY_FULL):
            self.rejections.prebuild(429, reason)
        self.rejections.prebuild(401, UNAUTHORIZED)
        self.rejections.prebuild(400, DUPLICATE_KEY)
        self.rejections.prebuild(429, MODE)
        self.rejections.prebuild(503, MODE, READ_ONLY_DETAIL)
        self._answers: dict[str, door_answers.Answer] = {}
        if health_path is not None:
            self._answers[health_path] = door_answers.health
        if registry is not None:
            self._answers[metrics_path] = door_answers.metrics(registry)

    def set_modes(self, modes: frozenset[str]) -> None:
        """Door-level modes; the others are the routes' business."""
        self.shed_sheddable = SHED_SHEDDABLE in modes
        self.read_only = READ_ONLY in modes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = self.routes.match(path)
        if route is None:
            answer = self._answers.get(path)
            if answer is not None and scope["method"] in ("GET", "HEAD"):
                await answer(send)
            else:
                await self.app(scope, receive, send)
            return

        claimed: bytes | None = None
        key: bytes | None = None
        keys = 0
        address: bytes | None = None
        address_header = self.address_header
        for name, value in scope["headers"]:
            if name == b"x-priority":
                claimed = value
            elif name == self.client_header:
                key = value
                keys += 1
            elif name == address_header:
                address = value

        # 1. told to wait? (held here: no CPU until its Retry-After has passed)
        box = self.penalty_box
        who: Any = None
        if box is not None:
            who = address if address is not None else scope.get("client")
            if who is not None:
                delay = box.arrive(who)
                if delay:
                    if delay == FULL:
                        await self._reject(send, route.name, route.priority, PENALTY_FULL, 429, who)
                        return
                    gone, receive = await self._hold(box, delay, receive)
                    if gone == _TOO_LARGE:
                        await self._refuse_body(send, route.name, route.priority)
                        return
                    if gone is not None:
                        return  # it gave up while held: nothing to decide, nobody to tell

        # 2. who is it?
        if keys > 1:
            await self._reject(send, route.name, route.priority, DUPLICATE_KEY, 400, who)
            return
        ceiling = route.priority
        client_keys = self.client_keys
        if client_keys is not None and route.needs_key:
            known = client_keys.ceilings.get(key) if key is not None else None
            if known is None:
                await self._reject(send, route.name, route.priority, UNAUTHORIZED, 401, who)
                return
            ceiling = known

        # 3. how important may it be?
        priority = route.priority if claimed is None else Priority.from_header(claimed, ceiling)
        if client_keys is not None and priority < ceiling:
            priority = ceiling  # claimed more than the key (or the public route) allows

        # 4. modes, then the limiter
        if self.read_only and scope["method"] in _WRITE_METHODS:
            await self._reject(send, route.name, priority, MODE, 503, who)
            return
        if self.shed_sheddable and priority is Priority.SHEDDABLE:
            await self._reject(send, route.name, priority, MODE, 429, who)
            return

        max_body = self.max_body_bytes
        if max_body is not None and scope["method"] not in _BODILESS_METHODS:
            declared = declared_length(scope)
            if declared is not None and declared > max_body:
                await self._refuse_body(send, route.name, priority)  # no slot for it
                return

        clock = self.clock
        ticket = self.limiter.try_acquire(priority, key)
        if ticket is None:
            self.metrics.queue_wait.extra_at_zero += 1  # admitted at once: a wait of 0
        elif isinstance(ticket, str):
            await self._reject(send, route.name, priority, ticket, 429, who)
            return
        else:
            arrived = clock()
            reason, receive = await self._wait(ticket, receive)
            if reason is not None:
                if reason == _TOO_LARGE:
                    await self._refuse_body(send, route.name, priority)
                elif reason != DISCONNECTED:
                    await self._reject(send, route.name, priority, reason, 429, who)
                return
            self.metrics.queue_wait.observe(clock() - arrived)
        admitted = clock()

        status = 500  # what the client sees if the app dies before starting a response
        # A response that streams while the app reads nothing is watched for its client
        # leaving (then send raises): see ResponseWatch. The app listening itself (a
        # receive pending, as Starlette's streaming does) needs no watch.
        watch: ResponseWatch | None = None
        listening = 0
        door_receive = receive

        async def app_receive() -> Message:
            nonlocal listening
            if watch is not None:
                return await watch.receive()
            listening += 1
            try:
                return await door_receive()
            finally:
                listening -= 1

        async def send_status(message: Message) -> None:
            nonlocal status, watch
            if watch is not None and watch.gone:
                raise ClientDisconnected("the client has gone")
            if message["type"] == "http.response.start":
                status = message["status"]
            elif watch is None and not listening and message.get("more_body", False):
                watch = ResponseWatch(door_receive, max_bytes=self.max_body_bytes)
            await send(message)

        try:
            await self.app(scope, app_receive, send_status)
        except ClientDisconnected:
            if watch is None or not watch.gone:
                raise  # not ours
        finally:
            if watch is not None:
                watch.stop()
            self.limiter.release(key)
            outcome = outcome_of(status)
            elapsed = clock() - admitted
            self.metrics.duration[(route.name, outcome)].observe(elapsed)
            self.metrics.requests[(route.name, priority, outcome)].inc()
            samples = self.samples
            if samples is not None:  # the inner loop's; +1: it was in flight until now
                samples.record(elapsed, status, self.limiter.in_flight + 1)

    async def _reject(
        self, send: Send, route: str, priority: Priority, reason: str, status: int, who: Any
    ) -> None:
        """Count and send a prebuilt rejection; tell the penalty box when the client was
        told to wait (its ``Retry-After`` grows with each early return)."""
        self.metrics.rejections[(reason, priority)].inc()
        self.metrics.requests[(route, priority, REJECTED)].inc()
        rejections = self.rejections
        seconds = rejections.retry_after()
        box = self.penalty_box
        if reason == PENALTY_FULL and box is not None:
            seconds = box.max_retry_after_s
            await rejections.send(send, status, reason, seconds, close=True)
            return
        if who is not None and box is not None:
            seconds = box.told_to_wait(who, seconds)
        await rejections.send(send, status, reason, seconds)

    async def _refuse_body(self, send: Send, route: str, priority: Priority) -> None:
        """413 for a body over ``max_body_bytes`` seen at the door (it never ran)."""
        assert self._too_large is not None
        self.metrics.requests[(route, priority, outcome_of(413))].inc()
        await self._too_large.send(send)

    async def _wait(self, waiter: Waiter, receive: Receive) -> tuple[str | None, Receive]:
        """Wait for a slot while watching for the client to go away (DISCONNECTED) or
        its body to pass the limit (_TOO_LARGE)."""

        def gone() -> None:
            self.limiter.abandon(waiter, disconnected=not watch.too_large)

        watch = ClientWatch(receive, on_gone=gone, max_bytes=self.max_body_bytes)
        try:
            reason = await self.limiter.wait(waiter)
        finally:
            receive = watch.stop()
        return _watch_outcome(watch) or reason, receive

    async def _hold(
        self, box: PenaltyBox, delay: float, receive: Receive
    ) -> tuple[str | None, Receive]:
        """Hold an early request ``delay`` seconds (its hold already counted by the box);
        DISCONNECTED when its client went away meanwhile (then nothing is decided or
        sent), _TOO_LARGE when its body passed the limit."""
        watch = ClientWatch(receive, max_bytes=self.max_body_bytes)
        try:
            await asyncio.wait((watch.task,), timeout=delay)
        finally:
            box.released()
            receive = watch.stop()
        return _watch_outcome(watch), receive


def _watch_outcome(watch: ClientWatch) -> str | None:
    if watch.too_large:
        return _TOO_LARGE
    return DISCONNECTED if watch.gone else None
