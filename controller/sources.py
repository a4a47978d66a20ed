"""Where signals come from: each replica's ``/metrics`` read directly.

A source returns one ``Scrape`` per target, or None for a target that could not
be read this tick (the controller then marks that replica stale and leaves its
knobs alone)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import httpx

from controller.scrape import Scrape


class SignalSource(Protocol):
    targets: Sequence[str]

    async def read(self) -> dict[str, Scrape | None]: ...


class DirectSource:
    """Scrapes every target's ``/metrics`` concurrently, each within ``timeout_s``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        targets: Sequence[str],
        *,
        timeout_s: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not targets:
            raise ValueError("at least one target URL is needed")
        self.targets: Sequence[str] = [t.rstrip("/") for t in targets]
        self._http = http
        self._timeout_s = timeout_s
        self._clock = clock
        self.last_error: dict[str, str] = {}

    async def _one(self, target: str) -> Scrape | None:
        try:
            response = await self._http.get(f"{target}/metrics", timeout=self._timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.last_error[target] = f"{type(exc).__name__}: {exc}"
            return None
        self.last_error.pop(target, None)
        return Scrape.from_text(response.text, self._clock())

    async def read(self) -> dict[str, Scrape | None]:
        results = await asyncio.gather(*(self._one(t) for t in self.targets))
        return dict(zip(self.targets, results, strict=True))
