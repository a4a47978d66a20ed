"""The in-process simulated db (``SimulatedDependency``, processor sharing): what a
replica uses when no ``SURGEGUARD_DATABASE_URL`` is set. Each replica has its own, so
two replicas have twice its capacity, which no real database does (see ``postgres``)."""

from __future__ import annotations

from typing import Any

from surgeguard.bulkhead import Bulkhead
from surgeguard.chaos import Chaos
from surgeguard_target_app.db.model import (
    FEED_PAGE_SIZE,
    FEED_WORK,
    ITEM_COUNT,
    ITEM_WORK,
    item_name,
    item_price_cents,
)
from surgeguard_target_app.dependencies import SimulatedDependency


class SimulatedDb:
    """Answers made up from the item id after ``work`` of simulated time in the db."""

    def __init__(self, dependency: SimulatedDependency, bulkhead: Bulkhead) -> None:
        self._dependency = dependency
        self._bulkhead = bulkhead

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def set_chaos(self, chaos: Chaos) -> None:
        pass  # the service applies chaos to its simulated dependencies itself

    def limit_changed(self) -> None:
        pass

    async def _call(self, work: float) -> None:
        await self._bulkhead.call(lambda: self._dependency.call(work))

    async def item(self, item_id: int) -> dict[str, Any] | None:
        await self._call(ITEM_WORK)
        if not 1 <= item_id <= ITEM_COUNT:
            return None
        return {"id": item_id, "name": item_name(item_id), "price_cents": item_price_cents(item_id)}

    async def feed(self, page: int) -> list[dict[str, Any]]:
        await self._call(FEED_WORK)
        first = (page - 1) * FEED_PAGE_SIZE + 1
        last = min(first + FEED_PAGE_SIZE, ITEM_COUNT + 1)
        return [{"id": i, "name": item_name(i)} for i in range(first, last)]

    async def add_order(self, order_id: str, item_id: int, quantity: int) -> None:
        await self._call(ITEM_WORK)

    async def add_signup(self, signup_id: str, email: str, name: str) -> None:
        pass  # a signup never called the simulated db: its data lives in Redis
