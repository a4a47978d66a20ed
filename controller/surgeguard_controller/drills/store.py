"""Drill records in Redis: a capped list, newest first, like the controller's other
records (``surgeguard_controller.store``), except that a record is updated in place as its drill
moves from running to its end."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from surgeguard_controller.drills.drill import Drill

DRILLS_KEY = "surgeguard:drills"
MAX_DRILLS = 200


def _encode(drill: Drill) -> str:
    return json.dumps(drill.to_json(), separators=(",", ":"))


class DrillStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def add(self, drill: Drill) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(DRILLS_KEY, _encode(drill))
            pipe.ltrim(DRILLS_KEY, 0, MAX_DRILLS - 1)
            await pipe.execute()

    async def update(self, drill: Drill) -> None:
        """Replace the record with ``drill``'s id (or add it, if it was trimmed away).
        Optimistic: WATCH the list, find the index, LSET; again if the list moved."""
        encoded = _encode(drill)
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(DRILLS_KEY)
                    raw = await pipe.lrange(DRILLS_KEY, 0, -1)
                    index = next(
                        (i for i, r in enumerate(raw) if json.loads(r).get("id") == drill.id),
                        None,
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if index is None:
                        pipe.lpush(DRILLS_KEY, encoded)
                        pipe.ltrim(DRILLS_KEY, 0, MAX_DRILLS - 1)
                    else:
                        pipe.lset(DRILLS_KEY, index, encoded)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def recent(self, limit: int = MAX_DRILLS) -> list[Drill]:
        raw = await self._client.lrange(DRILLS_KEY, 0, max(0, limit - 1))
        return [Drill.from_json(json.loads(r)) for r in raw]

    async def get(self, drill_id: str) -> Drill | None:
        return next((d for d in await self.recent() if d.id == drill_id), None)
