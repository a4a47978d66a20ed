"""One controller writes: a lease in Redis that the writing controller renews every tick.

Key ``surgeguard:controller:lease`` holds the holder's id for ``ttl_ms`` milliseconds
(three ticks by default). Each tick a controller renews it when it holds it, takes it
when it is free (``SET NX PX``, in one script so the two cannot interleave), and
otherwise learns who holds it. Only the holder writes: the control document is written
through a ``Fence`` on the same key, checked in the write's own transaction, so a
controller whose lease expired writes nothing even between two ticks. When the holder
stops, its lease expires and another controller takes it at its next tick.
"""

from __future__ import annotations

import os
import secrets
import socket

import redis.asyncio as aioredis

from surgeguard.controlplane import Fence

LEASE_KEY = "surgeguard:controller:lease"

# KEYS[1]: the lease; ARGV[1]: our id; ARGV[2]: TTL in ms. Returns the holder.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def controller_id() -> str:
    """``host:pid:random``: unique even for two controllers in one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        holder: str | None = None,
        ttl_ms: int = 3000,
        key: str = LEASE_KEY,
    ) -> None:
        """``holder``: this controller's id (default ``controller_id()``); ``ttl_ms``:
        how long the lease lasts after a renewal, milliseconds."""
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        self._client = client
        self.fence = Fence(key, holder or controller_id(), ttl_ms)
        self.holder: str | None = None  # who held it at the last renewal (None: unknown)

    @property
    def me(self) -> str:
        return self.fence.holder

    @property
    def held(self) -> bool:
        return self.holder == self.me

    async def renew(self) -> bool:
        """Renew or take the lease; True when this controller holds it (RedisError
        when Redis cannot be reached: then the holder is unknown)."""
        self.holder = None
        found = await self._client.eval(_RENEW, 1, self.fence.key, self.me, str(self.fence.ttl_ms))
        self.holder = found.decode() if isinstance(found, bytes) else str(found)
        return self.held

    async def release(self) -> None:
        """Give the lease up (when stopping), if it is still ours."""
        await self._client.eval(_RELEASE, 1, self.fence.key, self.me)
        self.holder = None

    def json(self) -> dict[str, object]:
        return {"held": self.held, "holder": self.holder, "me": self.me}
