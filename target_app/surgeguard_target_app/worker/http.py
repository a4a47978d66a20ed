"""A worker's tiny HTTP face: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on the worker's own event loop (not in a thread), so ``/healthz`` answering
means the loop that runs the jobs is alive. One request per connection; anything but
a GET of those three paths gets 404 or 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

READ_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 16 * 1024


class WorkerHttp:
    def __init__(
        self, registry: CollectorRegistry, *, ready: Callable[[], bool], host: str, port: int
    ) -> None:
        """``port`` 0 picks a free one (see ``port`` after ``start()``)."""
        self._registry = registry
        self._ready = ready
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError("header too large")
            method, path = head.split(b" ", 2)[:2]
            writer.write(self._answer(method, path.split(b"?", 1)[0]))
            await writer.drain()
        except (
            OSError,
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # a client that sends garbage or goes away gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _answer(self, method: bytes, path: bytes) -> bytes:
        if path not in (b"/metrics", b"/healthz", b"/readyz"):
            return _response(404, "application/json", b'{"error": "not found"}')
        if method != b"GET":
            return _response(405, "application/json", b'{"error": "method not allowed"}')
        if path == b"/metrics":
            return _response(200, CONTENT_TYPE_LATEST, generate_latest(self._registry))
        if path == b"/healthz":
            return _response(200, "application/json", b'{"status": "ok"}')
        ready = self._ready()
        body = json.dumps({"ready": ready}).encode()
        return _response(200 if ready else 503, "application/json", body)


def _response(status: int, content_type: str, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
