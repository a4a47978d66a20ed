"""Where signals come from: each replica's ``/metrics`` read directly, or the same
series queried from a Prometheus server that scrapes the replicas.

A source returns one ``Scrape`` per target, or None for a target that could not
be read this tick (the controller then marks that replica stale and leaves its
knobs alone). Its targets come from a ``TargetSet`` refreshed at every read: a fixed
list, or the static targets plus the replicas announced in Redis (``discovery``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from surgeguard import metric_names as names
from surgeguard_controller.sensing.discovery import StaticTargets, TargetSet, vet
from surgeguard_controller.sensing.scrape import Scrape


class SignalSource(Protocol):
    found: TargetSet  # where its targets come from
    last_error: dict[str, str]  # target -> why its last read failed

    @property
    def targets(self) -> Sequence[str]: ...

    async def read(self) -> dict[str, Scrape | None]: ...


def _target_set(targets: Sequence[str] | TargetSet) -> TargetSet:
    if isinstance(targets, str):
        raise TypeError("targets: a list of base URLs, not one string")
    return StaticTargets(targets) if isinstance(targets, Sequence) else targets


class DirectSource:
    """Scrapes every target's ``/metrics`` concurrently, each within ``timeout_s``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        targets: Sequence[str] | TargetSet,
        *,
        timeout_s: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``targets``: base URLs, or a ``TargetSet`` read again at every ``read``."""
        self.found = _target_set(targets)
        self._static_names: set[str] = set()  # replicas the static targets answered as
        self._http = http
        self._timeout_s = timeout_s
        self._clock = clock
        self.last_error: dict[str, str] = {}

    @property
    def targets(self) -> Sequence[str]:
        return self.found.current

    async def _one(self, target: str) -> Scrape | None:
        try:
            response = await self._http.get(f"{target}/metrics", timeout=self._timeout_s)
            response.raise_for_status()
            scrape = Scrape.from_text(response.text, self._clock())
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: not metrics text
            self.last_error[target] = f"{type(exc).__name__}: {exc}"
            return None
        self.last_error.pop(target, None)
        return scrape

    async def read(self) -> dict[str, Scrape | None]:
        targets = list(await self.found.refresh())
        results = await asyncio.gather(*(self._one(t) for t in targets))
        _forget_errors(self.last_error, targets)
        read = dict(zip(targets, results, strict=True))
        return vet(read, self.found.announced, self.last_error, self._static_names)


class PrometheusSource:
    """Signals from a Prometheus server that already scrapes the replicas.

    One instant query per tick returns every ``surgeguard_*`` series (and the process's
    CPU counter, for the event-loop-lag rule) with its sample
    time; series are grouped by ``instance`` (``host:port`` of each target URL) into
    one ``Scrape`` per target, with Prometheus's own ``instance``/``job`` labels
    dropped, so everything downstream is the same as for a direct scrape. ``at`` is
    the newest sample time of the instance (seconds), so a tick that saw no new
    Prometheus scrape yields no new window instead of a wrong rate."""

    QUERY = f'{{__name__=~"{names.PREFIX}.+|{names.PROCESS_CPU_SECONDS_TOTAL}"}}'
    # When each instance was last scraped: one gauge every replica exports. (timestamp()
    # over all series would drop their names and collide.)
    STAMP_QUERY = f"timestamp({names.INFLIGHT})"

    def __init__(
        self,
        http: httpx.AsyncClient,
        prometheus_url: str,
        targets: Sequence[str] | TargetSet,
        *,
        timeout_s: float = 0.8,
    ) -> None:
        """``targets``: base URLs, or a ``TargetSet`` read again at every ``read``
        (each maps to the Prometheus ``instance`` of its ``host:port``)."""
        self.found = _target_set(targets)
        self._static_names: set[str] = set()  # replicas the static targets answered as
        self._url = prometheus_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self.last_error: dict[str, str] = {}

    async def _query(self, query: str) -> list[dict[str, Any]]:
        response = await self._http.get(
            f"{self._url}/api/v1/query", params={"query": query}, timeout=self._timeout_s
        )
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise httpx.HTTPError(f"prometheus: {body.get('error', 'query failed')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    @property
    def targets(self) -> Sequence[str]:
        return self.found.current

    async def read(self) -> dict[str, Scrape | None]:
        targets = list(await self.found.refresh())
        _forget_errors(self.last_error, targets)
        instances = {urlsplit(t).netloc: t for t in targets}
        try:
            values, stamps = await asyncio.gather(
                self._query(self.QUERY), self._query(self.STAMP_QUERY)
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            for target in targets:
                self.last_error[target] = f"prometheus unreachable: {exc}"
            return dict.fromkeys(targets)
        newest: dict[str, float] = {}
        for series in stamps:
            instance = series["metric"].get("instance", "")
            newest[instance] = max(newest.get(instance, 0.0), float(series["value"][1]))
        samples: dict[str, dict[tuple[str, frozenset[tuple[str, str]]], float]] = {}
        for series in values:
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            instance = labels.pop("instance", "")
            labels.pop("job", None)
            if instance in instances:
                samples.setdefault(instance, {})[(name, frozenset(labels.items()))] = float(
                    series["value"][1]
                )
        scrapes: dict[str, Scrape | None] = {}
        for instance, target in instances.items():
            if instance in samples:
                scrapes[target] = Scrape(newest.get(instance, 0.0), samples[instance])
                self.last_error.pop(target, None)
            else:
                scrapes[target] = None
                self.last_error[target] = f"prometheus has no series for instance {instance}"
        return vet(scrapes, self.found.announced, self.last_error, self._static_names)


def _forget_errors(errors: dict[str, str], targets: Sequence[str]) -> None:
    """Errors of targets no longer read go (a fleet that churns must not grow them)."""
    for target in set(errors) - set(targets):
        del errors[target]
