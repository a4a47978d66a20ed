"""Answers the door gives itself, without routing: health and metrics.

A flood of requests queues up in front of the app's router; a liveness probe stuck
behind it makes an orchestrator kill a replica that works, and a slow scrape blinds
the controller. So ``/healthz`` is two prebuilt messages and ``/metrics`` is one
``generate_latest`` call, answered by the middleware before anything else runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from surgeguard.asgi import Message, Send

Answer = Callable[[Send], Awaitable[None]]

_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_HEALTH_BODY)).encode()),
        (b"cache-control", b"no-store"),
    ],
}
_HEALTH_END: Message = {"type": "http.response.body", "body": _HEALTH_BODY}


async def health(send: Send) -> None:
    """200 ``{"status":"ok"}``: the event loop is alive and answering."""
    await send(_HEALTH_START)
    await send(_HEALTH_END)


def metrics(registry: CollectorRegistry) -> Answer:
    """The registry in Prometheus's text format."""

    async def answer(send: Send) -> None:
        body = generate_latest(registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return answer
