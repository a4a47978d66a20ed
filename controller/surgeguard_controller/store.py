"""What the controller remembers, in Redis: decisions, history, the audit trail.

Each is a capped list (newest first), so memory stays bounded however long the
controller runs: ``LPUSH`` then ``LTRIM`` in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

DECISIONS_KEY = "surgeguard:controller:decisions"
HISTORY_KEY = "surgeguard:controller:history"
AUDIT_KEY = "surgeguard:audit"

MAX_DECISIONS = 2_000
MAX_HISTORY = 3_600  # one hour of 1 s ticks
MAX_AUDIT = 10_000


class RecordStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def _push(self, key: str, cap: int, records: list[Mapping[str, Any]]) -> None:
        if not records:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, *(json.dumps(r, separators=(",", ":")) for r in records))
            pipe.ltrim(key, 0, cap - 1)
            await pipe.execute()

    async def _read(self, key: str, limit: int) -> list[dict[str, Any]]:
        raw = await self._client.lrange(key, 0, max(0, limit - 1))
        return [json.loads(r) for r in raw]

    async def add_decisions(self, records: list[Mapping[str, Any]]) -> None:
        await self._push(DECISIONS_KEY, MAX_DECISIONS, records)

    async def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(DECISIONS_KEY, limit)

    async def add_history(self, record: Mapping[str, Any]) -> None:
        """One tick record, scored by its time (unix seconds) so a window is one
        range query; the oldest beyond ``MAX_HISTORY`` are dropped."""
        encoded = json.dumps(record, separators=(",", ":"))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(HISTORY_KEY, {encoded: float(record["at"])})
            pipe.zremrangebyrank(HISTORY_KEY, 0, -MAX_HISTORY - 1)
            await pipe.execute()

    async def history_json(self, since_wall: float) -> bytes:
        """Tick records newer than ``since_wall`` (unix seconds), oldest first, as one
        JSON array built from the stored bytes: an hour of history is served without
        decoding and re-encoding 3,600 records."""
        raw = await self._client.zrangebyscore(HISTORY_KEY, since_wall, "+inf")
        return b"[" + b",".join(r if isinstance(r, bytes) else str(r).encode() for r in raw) + b"]"

    async def history(self, since_wall: float) -> list[dict[str, Any]]:
        """The same records, decoded."""
        decoded: list[dict[str, Any]] = json.loads(await self.history_json(since_wall))
        return decoded

    async def add_audit(self, record: Mapping[str, Any]) -> None:
        await self._push(AUDIT_KEY, MAX_AUDIT, [record])

    @staticmethod
    def queue_audit(pipe: Any, record: Mapping[str, Any]) -> None:
        """Add ``record`` to the audit trail within a transaction ``pipe`` (MULTI
        already called): it lands with the rest of that transaction or not at all."""
        pipe.lpush(AUDIT_KEY, json.dumps(record, separators=(",", ":")))
        pipe.ltrim(AUDIT_KEY, 0, MAX_AUDIT - 1)

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(AUDIT_KEY, limit)
