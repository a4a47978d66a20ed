"""An inventory service of its own making, protected by surgeguard in one call.

It is not the demo: its routes are ``GET /stock/{sku}`` and ``POST /reservations``, it
calls one dependency of its own, ``inventory_db``, and it has one degradation mode of
its own, ``reservations_paused``. The controller learns all three from its ``/metrics``
and tunes ``bulkhead.inventory_db`` and ``concurrency_limit`` for it.

Run it (one worker: this process's limiter and bulkhead are the ones the controller
tunes when it scrapes this port)::

    SURGEGUARD_REDIS_URL=redis://127.0.0.1:6379/0 python examples/inventory_service.py --port 8080
    surgeguard controller --target http://127.0.0.1:8080

Without ``SURGEGUARD_REDIS_URL`` it serves on static knobs. Everything else is a
``SURGEGUARD_*`` setting (``surgeguard.settings.ReplicaSettings``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import zlib

import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

import surgeguard
from surgeguard import Dependency, ModeSpec, Priority, Route


class InventoryDb:
    """A stand-in for the app's real database (code of the app's own, not the
    library's): it runs ``connections`` queries at once, ``query_s`` seconds each, and
    the rest wait for a connection, so under overload its latency climbs the way a
    pooled database's does. A real service would call its real database here."""

    def __init__(self, connections: int, query_s: float) -> None:
        self._pool = asyncio.Semaphore(connections)
        self._query_s = query_s
        self._reserved: dict[str, int] = {}

    async def _query(self) -> None:
        async with self._pool:
            await asyncio.sleep(self._query_s)

    async def available(self, sku: str) -> int:
        await self._query()
        return 100 + zlib.crc32(sku.encode()) % 900 - self._reserved.get(sku, 0)

    async def reserve(self, sku: str, quantity: int) -> int:
        """Reserve ``quantity`` of ``sku``; what is left after it (-1: not enough)."""
        left = await self.available(sku) - quantity
        if left < 0:
            return -1
        await self._query()
        self._reserved[sku] = self._reserved.get(sku, 0) + quantity
        return left


db = InventoryDb(
    connections=int(os.environ.get("INVENTORY_DB_CONNECTIONS", "4")),
    query_s=float(os.environ.get("INVENTORY_DB_QUERY_MS", "40")) / 1000.0,
)


class Reservation(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


# -- the README shows from here to the end marker (tests/examples/test_readme_example.py)
app = FastAPI(title="inventory")
guard = surgeguard.protect(
    app,
    routes={
        "/stock/*": Route("stock", Priority.NORMAL),
        "/reservations": Route("reservations", Priority.CRITICAL),
    },
    dependencies=[Dependency("inventory_db", slots=32, min_slots=2, max_slots=64)],
    modes=[
        ModeSpec(
            "reservations_paused",
            "POST /reservations answers 503 with Retry-After; stock reads keep working.",
        )
    ],
    slo_ms=250,
    redis_url=os.environ.get("SURGEGUARD_REDIS_URL"),
)


@app.get("/stock/{sku}", dependencies=[Depends(guard.slot("inventory_db"))])
async def stock(sku: str) -> dict[str, object]:
    return {"sku": sku, "available": await db.available(sku)}


@app.post("/reservations", status_code=201)
async def reserve(reservation: Reservation) -> dict[str, object]:
    if "reservations_paused" in guard.modes:
        raise HTTPException(503, "reservations are paused", headers={"Retry-After": "5"})
    async with guard.bulkheads["inventory_db"].slot():
        left = await db.reserve(reservation.sku, reservation.quantity)
    if left < 0:
        raise HTTPException(409, f"not enough {reservation.sku} in stock")
    return {"sku": reservation.sku, "reserved": reservation.quantity, "left": left}


# -- end of what the README shows ------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="The inventory service, protected.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    # One worker: each process has its own limiter and bulkheads, and the controller
    # tunes the one it scrapes. No access log: under a spike that is CPU the door needs.
    uvicorn.run(guard, host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
