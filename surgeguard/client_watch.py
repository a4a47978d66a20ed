"""Watching a waiting request's client: did it go away?

While a request waits (held in the penalty box, or queued for a slot) nothing reads
its connection, so a client that gives up would still be decided, and perhaps
admitted, for nobody. ``ClientWatch`` reads the client's messages meanwhile: a
disconnect ends the wait at once (``gone``), and anything else it read (a request
body) is replayed to the app afterwards. It reads no more than ``max_bytes`` of a
body: past that it stops reading (``too_large``) and ends the wait the same way, so
a waiting request's body is never buffered past the limit the app would enforce.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from surgeguard.asgi import Message, Receive


class ClientWatch:
    """Start watching ``receive`` now; ``on_gone()`` runs the moment the client leaves
    or its body passes ``max_bytes`` (bytes; None: no limit)."""

    def __init__(
        self,
        receive: Receive,
        on_gone: Callable[[], None] | None = None,
        *,
        max_bytes: int | None = None,
    ) -> None:
        self._receive = receive
        self._on_gone = on_gone
        self._room = max_bytes
        self._buffered: list[Message] = []
        self.gone = False
        self.too_large = False
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                break
            if self._room is not None:
                self._room -= len(message.get("body", b""))
                if self._room < 0:
                    # Stop reading: the server buffers a little, then stops reading too.
                    self.too_large = True
                    self._buffered.clear()
                    break
            self._buffered.append(message)
        if self._on_gone is not None:
            self._on_gone()

    def stop(self) -> Receive:
        """Stop watching; the ``receive`` to hand the app (replays what was read)."""
        self.task.cancel()
        # The cancelled task keeps its CancelledError, whose traceback holds the
        # watching frame, which holds this object: without this the task -> error ->
        # frame -> watch -> task cycle is left for the full collection, which a storm
        # makes rare (gc_policy), and 10,000 held requests cost twice the memory.
        del self.task
        if not self._buffered:
            return self._receive
        buffered, receive = self._buffered, self._receive

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        return replay


class ClientDisconnected(OSError):
    """Raised by ``send`` once the client of a streaming response has gone (what ASGI
    2.4 asks of a server; uvicorn's ``send`` just drops the message instead)."""


class ResponseWatch:
    """Watch a streaming response's client while the app is not listening for it.

    Some servers (uvicorn among them) accept ``send`` on a closed connection without
    a word, so an app that streams without reading ``receive`` would stream to nobody,
    and hold its slot, for ever. From its start this is the only reader of
    ``receive``: the app's own calls get what it read (a body, at most ``max_bytes``
    of it; past that it stops watching and the app reads for itself) and then the
    disconnect."""

    def __init__(self, receive: Receive, *, max_bytes: int | None = None) -> None:
        self._receive = receive
        self._room = max_bytes
        self._buffered: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self.gone = False
        self._stopped = False
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.gone = True
                    return
                if self._room is not None:
                    self._room -= len(message.get("body", b""))
                    if self._room < 0:
                        self._buffered.append(message)  # the app's limit decides on it
                        return
                self._buffered.append(message)
                self._arrived.set()
        finally:
            self._stopped = True
            self._arrived.set()

    async def receive(self) -> Message:
        """The app's ``receive`` while watched."""
        while not self._buffered:
            if self.gone:
                return {"type": "http.disconnect"}
            if self._stopped:
                return await self._receive()
            self._arrived.clear()
            await self._arrived.wait()
        return self._buffered.popleft()

    def stop(self) -> None:
        self.task.cancel()
        del self.task  # as in ClientWatch.stop: no cycle left for the full collection
