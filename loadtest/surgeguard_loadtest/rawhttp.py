"""A small, cheap HTTP/1.1 load generator on asyncio streams (benchmarks and tests).

httpx spends about a millisecond of CPU per request; driving a few hundred
requests per second through it from a test on a 2-core machine starves the
server being tested. This client does one keep-alive connection per worker,
writes prebuilt request bytes and parses only the status line and
``Content-Length``, so the load generator stays a small share of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Result:
    started: float  # monotonic seconds
    latency_s: float
    status: int  # 0: the connection failed
    reason: str = ""  # X-Surgeguard-Reason of a rejection, if any


@dataclass
class LoadReport:
    results: list[Result] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


class Connection:
    def __init__(self, host: str, port: int, headers: Mapping[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host}:{port}\r\n{extra}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def get(self, path: str) -> tuple[int, str]:
        """(status, rejection reason); reconnects when the server closed the connection."""
        reader, writer = await self._connect()
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, reason, close = 0, "", False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-surgeguard-reason":
                reason = value.strip().decode()
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await reader.readexactly(length)
        if close:
            await self.close()
        return status, reason

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def closed_loop(
    url: str,
    workers: int,
    seconds: float,
    path: Callable[[], str],
    *,
    headers: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
    report: LoadReport | None = None,
    pause_after_rejection_s: float = 0.0,
) -> LoadReport:
    """``workers`` clients, each sending its next request as soon as the last is
    answered, for ``seconds``. Failed connections count as status 0 and reconnect.
    ``headers`` may be a function of the worker's number (e.g. a client key each).
    After a 429 or 503 a worker pauses ``pause_after_rejection_s`` (0: an impatient
    client that asks again at once)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    report = report if report is not None else LoadReport()
    stop_at = time.monotonic() + seconds

    async def worker(number: int) -> None:
        own = headers(number) if callable(headers) else headers or {}
        connection = Connection(host, port, own)
        try:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    status, reason = await connection.get(path())
                except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
                    await connection.close()
                    status, reason = 0, ""
                    await asyncio.sleep(0.01)  # don't spin on a refused connection
                report.results.append(Result(started, time.monotonic() - started, status, reason))
                if status in (429, 503) and pause_after_rejection_s > 0:
                    await asyncio.sleep(pause_after_rejection_s)
        finally:
            await connection.close()

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return report


async def open_loop(
    url: str,
    rate_per_s: float,
    seconds: float,
    path: Callable[[], str],
    *,
    headers: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
    max_connections: int = 2_000,
    report: LoadReport | None = None,
) -> tuple[LoadReport, int]:
    """Requests arrive at ``rate_per_s`` whether or not earlier ones were answered
    (the way users arrive), for ``seconds``. Returns the report and how many arrivals
    the generator could not send because ``max_connections`` were all busy."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    report = report if report is not None else LoadReport()
    idle: list[Connection] = []
    busy = 0
    skipped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def fire(connection: Connection) -> None:
        nonlocal busy
        started = time.monotonic()
        try:
            status, reason = await connection.get(path())
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            await connection.close()
            status, reason = 0, ""
        report.results.append(Result(started, time.monotonic() - started, status, reason))
        busy -= 1
        idle.append(connection)

    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        due = int((now - start) * rate_per_s) - sent
        for _ in range(due):
            sent += 1
            if idle:
                connection = idle.pop()
            elif busy + len(idle) < max_connections:
                number = busy + len(idle)
                own = headers(number) if callable(headers) else headers or {}
                connection = Connection(host, port, own)
            else:
                skipped += 1
                continue
            busy += 1
            task = asyncio.create_task(fire(connection))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.002)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
        for task in list(tasks):  # answers that never came: stop waiting for them
            task.cancel()
    for connection in idle:
        await connection.close()
    return report, skipped
