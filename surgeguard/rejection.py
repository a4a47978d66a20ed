"""Prebuilt rejection responses: the hot path during a spike.

Most requests in a spike are turned away, so saying no must cost almost nothing:
the header lists and JSON bodies are built once, and a rejection only picks a
``Retry-After`` (jittered, so clients do not come back together; longer for a
client in the penalty box) and sends two prebuilt messages. A response for a new
``Retry-After`` value is built the first time it is needed and kept.
"""

from __future__ import annotations

import json
import random

from surgeguard.asgi import Message, Send
from surgeguard.reasons import REASON_DETAIL

_EXTRA_HEADERS: dict[int, list[tuple[bytes, bytes]]] = {
    401: [(b"www-authenticate", b"ApiKey")],
}


class RejectionResponses:
    """Prebuilt (start, body) pairs per status, reason, ``Retry-After`` and close."""

    def __init__(
        self, retry_after_s: tuple[int, int] = (1, 3), *, rng: random.Random | None = None
    ) -> None:
        low, high = retry_after_s
        if not 0 <= low <= high:
            raise ValueError(
                f"retry_after_s must be (low, high) with 0 <= low <= high, got {retry_after_s}"
            )
        self._values = list(range(low, high + 1))
        self._random = (rng or random.Random()).random
        self._bodies: dict[tuple[int, str], Message] = {}
        self._starts: dict[tuple[int, str, int, bool], Message] = {}

    def prebuild(self, status: int, reason: str, detail: str | None = None) -> None:
        body = json.dumps(
            {"error": "rejected", "reason": reason, "detail": detail or REASON_DETAIL[reason]},
            separators=(",", ":"),
        ).encode()
        self._bodies[(status, reason)] = {"type": "http.response.body", "body": body}
        for seconds in self._values:
            self._start(status, reason, seconds, False)

    def retry_after(self) -> int:
        """A jittered ``Retry-After`` from the configured range (seconds)."""
        values = self._values
        return values[int(self._random() * len(values))]

    def _start(self, status: int, reason: str, seconds: int, close: bool) -> Message:
        key = (status, reason, seconds, close)
        start = self._starts.get(key)
        if start is None:
            body = self._bodies[(status, reason)]["body"]
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
                (b"x-surgeguard-reason", reason.encode()),
                *_EXTRA_HEADERS.get(status, ()),
            ]
            if close:
                headers.append((b"connection", b"close"))
            start = {"type": "http.response.start", "status": status, "headers": headers}
            self._starts[key] = start
        return start

    async def send(
        self,
        send: Send,
        status: int,
        reason: str,
        retry_after_s: int | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Send the rejection with ``retry_after_s`` (default: a jittered one); with
        ``close`` the server closes the connection after it."""
        seconds = self.retry_after() if retry_after_s is None else retry_after_s
        await send(self._start(status, reason, seconds, close))
        await send(self._bodies[(status, reason)])
