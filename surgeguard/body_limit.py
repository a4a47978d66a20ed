"""Refuse request bodies over a size limit with 413, before they are read whole.

A declared ``Content-Length`` over the limit is answered at once. A chunked body is
counted as it arrives; once it passes the limit the app's own response (it will see
a truncated body) is replaced by the 413, so nothing of the request is acted on.
"""

from __future__ import annotations

import contextlib
import json

from surgeguard.asgi import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self._body = json.dumps(
            {
                "error": "payload_too_large",
                "detail": f"request body is larger than the maximum of {max_bytes} bytes",
            }
        ).encode()

    async def _send_413(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._send_413(send)
                    return
                break

        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge()
            return message

        sent_413 = False

        async def guarded_send(message: Message) -> None:
            nonlocal sent_413
            if not too_large:
                await send(message)
            elif not sent_413:
                sent_413 = True
                await self._send_413(send)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if too_large and not sent_413:
            await self._send_413(send)
