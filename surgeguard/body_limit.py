"""Request bodies within bounds: 413 past a size limit, 408 past a deadline.

A declared ``Content-Length`` over the limit is answered at once. A chunked body is
counted as it arrives; once it passes the limit the app's own response (it will see
a truncated body) is replaced by the 413, so nothing of the request is acted on.

A body must arrive whole within ``timeout_s`` of the app first asking for it, or the
request is answered 408 the same way: a slow client cannot hold an admitted slot for
as long as it likes. Once the body is complete no deadline applies (an app may wait
on ``receive`` for the client to leave). The door (``AdmissionMiddleware``) applies
the size limit while a request waits for its slot, with the same ``Refusal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from surgeguard.asgi import ASGIApp, Message, Receive, Scope, Send


class BodyRefused(Exception):
    """Raised to the app from ``receive`` when its request body is refused."""


class BodyTooLarge(BodyRefused):
    pass


class BodyTimeout(BodyRefused):
    pass


class Refusal:
    """A small prebuilt JSON answer that closes the connection (the rest of the body
    is never read)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status = status
        self.body = json.dumps({"error": error, "detail": detail}).encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"connection", b"close"),
        ]

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def too_large(max_bytes: int) -> Refusal:
    return Refusal(
        413, "payload_too_large", f"request body is larger than the maximum of {max_bytes} bytes"
    )


def too_slow(timeout_s: float) -> Refusal:
    return Refusal(
        408,
        "request_timeout",
        f"request body did not arrive within {round(timeout_s * 1000)} ms",
    )


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (-1 when it is not a number; None: none)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class BodySizeLimitMiddleware:
    """``max_bytes``: largest body (bytes). ``timeout_s``: longest time for the whole
    body to arrive once the app asks for it (seconds; None: no deadline)."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, timeout_s: float | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._too_large = too_large(max_bytes)
        self._too_slow = too_slow(timeout_s) if timeout_s is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large.send(send)
            return

        received = 0
        complete = False
        refusal: Refusal | None = None
        deadline: float | None = None
        timeout_s = self.timeout_s

        async def guarded_receive() -> Message:
            nonlocal received, complete, refusal, deadline
            if refusal is not None:
                return {"type": "http.disconnect"}
            if complete or timeout_s is None:
                message = await receive()
            else:
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + timeout_s
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    refusal = self._too_slow
                    raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refusal = self._too_large
                    raise BodyTooLarge()
                complete = not message.get("more_body", False)
            return message

        started = False  # the app's response went out before a refusal: too late for it
        refused = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, refused
            if refusal is None:
                started = True
                await send(message)
            elif not refused and not started:
                refused = True
                await refusal.send(send)

        with contextlib.suppress(BodyRefused):
            await self.app(scope, guarded_receive, guarded_send)
        if refusal is not None and not refused and not started:
            await refusal.send(send)
