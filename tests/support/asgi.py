"""Small pieces for the tiny ASGI apps tests put behind real servers."""

from __future__ import annotations

from surgeguard.asgi import Receive, Send


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan scope: start-up at once, then shut down when told."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
