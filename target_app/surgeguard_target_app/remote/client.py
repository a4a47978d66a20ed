"""The replica's side of recommendations and payments: in process or over HTTP.

``Recommender`` and ``Payments`` are what the routes call (inside the dependency's
bulkhead). With ``SURGEGUARD_<NAME>_URL`` unset they are the in-process simulation (a
``SimulatedDependency`` per replica, as before); set, they call the remote API through
the replica's one shared ``httpx.AsyncClient``. Either way trouble is a
``DependencyError`` naming the dependency, which the routes turn into a degraded answer
(the feed) or a 503 (orders): a remote that is down, slow past the timeout, or
answering 5xx never becomes a 500 or a hang.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from surgeguard_target_app.dependencies import DependencyError, SimulatedDependency
from surgeguard_target_app.remote import api


class Recommender(Protocol):
    async def recommend(self, user_id: int, limit: int) -> list[int]:
        """Up to ``limit`` item ids for ``user_id``."""
        ...


class Payments(Protocol):
    async def charge(self, order_id: str, amount_cents: int) -> str:
        """Charge an order; returns the charge id."""
        ...


class LocalRecommender:
    """The simulation in this replica: its own capacity, its own chaos."""

    def __init__(self, dependency: SimulatedDependency) -> None:
        self._dependency = dependency

    async def recommend(self, user_id: int, limit: int) -> list[int]:
        await self._dependency.call()
        return api.recommended_items(user_id, limit)


class LocalPayments:
    def __init__(self, dependency: SimulatedDependency) -> None:
        self._dependency = dependency

    async def charge(self, order_id: str, amount_cents: int) -> str:
        await self._dependency.call()
        return secrets.token_hex(16)


def remote_http(max_connections: int, timeout_s: float) -> httpx.AsyncClient:
    """The replica's one client for its remote APIs: at most ``max_connections`` open at
    once (a call waiting for one counts against its timeout), ``timeout_s`` seconds for
    each of connect, write, read and the wait for a pooled connection."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,  # a proxy from the environment must not sit between services
    )


class RemoteCaller:
    """Calls to one remote API at ``base_url``; any trouble is a ``DependencyError``."""

    def __init__(self, name: str, base_url: str, http: httpx.AsyncClient) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The decoded JSON answer of a 2xx; else ``DependencyError`` saying what went wrong."""
        url = f"{self.base_url}{path}"
        try:
            response = await self._http.request(method, url, params=params, json=body)
        except httpx.TimeoutException:
            raise DependencyError(self.name, f"no answer from {self.base_url} in time") from None
        except httpx.HTTPError as exc:
            raise DependencyError(
                self.name, f"unreachable at {self.base_url} ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            # A 4xx is a call this replica got wrong: not the client's fault either, so
            # it is the dependency's 503 too (and a log line on the remote side).
            raise DependencyError(
                self.name, f"{self.base_url} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError:
            raise DependencyError(self.name, f"{self.base_url} answered with no JSON") from None


class RemoteRecommender:
    def __init__(self, caller: RemoteCaller) -> None:
        self._caller = caller

    async def recommend(self, user_id: int, limit: int) -> list[int]:
        answer = await self._caller.request(
            "GET", api.RECOMMENDATIONS_PATH.format(user_id=user_id), params={"limit": limit}
        )
        try:
            return api.Recommendations.model_validate(answer).items
        except ValueError:
            raise DependencyError(self._caller.name, "answer is not a recommendation") from None


class RemotePayments:
    def __init__(self, caller: RemoteCaller) -> None:
        self._caller = caller

    async def charge(self, order_id: str, amount_cents: int) -> str:
        body = api.ChargeIn(order_id=order_id, amount_cents=amount_cents).model_dump()
        answer = await self._caller.request("POST", api.CHARGES_PATH, body=body)
        try:
            return api.Charge.model_validate(answer).charge_id
        except ValueError:
            raise DependencyError(self._caller.name, "answer is not a charge") from None


@dataclass(frozen=True)
class Callers:
    """How this replica calls recommendations and payments, and the shared HTTP client
    (None when both are simulated in process)."""

    recommender: Recommender
    payments: Payments
    remote: Mapping[str, str]  # dependency -> base URL, for those that are remote
    http: httpx.AsyncClient | None = None

    @classmethod
    def build(
        cls,
        remote: Mapping[str, str],
        local: Mapping[str, SimulatedDependency],
        *,
        max_connections: int,
        timeout_s: float,
    ) -> Callers:
        """``remote``: dependency -> base URL; the others come from ``local``."""
        http = remote_http(max_connections, timeout_s) if remote else None

        def caller(name: str) -> RemoteCaller:
            assert http is not None
            return RemoteCaller(name, remote[name], http)

        return cls(
            recommender=RemoteRecommender(caller("recommendations"))
            if "recommendations" in remote
            else LocalRecommender(local["recommendations"]),
            payments=RemotePayments(caller("payments"))
            if "payments" in remote
            else LocalPayments(local["payments"]),
            remote=dict(remote),
            http=http,
        )

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
