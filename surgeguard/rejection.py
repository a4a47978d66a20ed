"""Prebuilt rejection responses: the hot path during a spike.

Most requests in a spike are turned away, so saying no must cost almost nothing:
the header lists and JSON bodies are built once here, and a rejection only picks
one of a few ``Retry-After`` variants (the jitter, so clients do not come back
together) and sends two prebuilt messages.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

REASON_DETAIL: dict[str, str] = {
    "queue_full": "The service is at capacity and its wait queue is full.",
    "queue_timeout": "The request waited too long for a free slot.",
    "priority": "Shed in favour of more important traffic while the service is saturated.",
    "client_share": "This client key already holds its share of the service's capacity.",
    "mode": "Rejected by an active degradation mode.",
}


class RejectionResponses:
    """One prebuilt (start, body) pair per status, reason and Retry-After value."""

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
        self._prebuilt: dict[tuple[int, str], list[tuple[Message, Message]]] = {}

    def prebuild(self, status: int, reason: str, detail: str | None = None) -> None:
        body = json.dumps(
            {"error": "rejected", "reason": reason, "detail": detail or REASON_DETAIL[reason]},
            separators=(",", ":"),
        ).encode()
        variants = []
        for seconds in self._values:
            start: Message = {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(seconds).encode()),
                    (b"x-surgeguard-reason", reason.encode()),
                ],
            }
            end: Message = {"type": "http.response.body", "body": body}
            variants.append((start, end))
        self._prebuilt[(status, reason)] = variants

    async def send(self, send: Send, status: int, reason: str) -> None:
        variants = self._prebuilt[(status, reason)]
        start, body = variants[int(self._random() * len(variants))]
        await send(start)
        await send(body)
