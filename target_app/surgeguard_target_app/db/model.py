"""What the routes ask of the database, whichever it is (``Database``), and the demo
data set's fixed facts (item count, names and prices), shared by both kinds of db."""

from __future__ import annotations

from typing import Any, Protocol

from surgeguard.chaos import Chaos

ITEM_COUNT = 100_000  # items 1..ITEM_COUNT (the routes validate ids against it)
FEED_PAGE_SIZE = 20
# Work per call, in multiples of the db's base latency: a feed page is a heavier query
# than one item, a write about as heavy as a read by key.
ITEM_WORK = 1.0
FEED_WORK = 2.0
WRITE_WORK = 1.0


def item_name(item_id: int) -> str:
    return f"item {item_id}"


def item_price_cents(item_id: int) -> int:
    return 100 + item_id % 9_900


class Database(Protocol):
    """One call each, inside the db's bulkhead. Errors: ``BulkheadRejected`` (full,
    timeout) or ``DependencyError`` naming ``db`` (it failed or cannot be reached)."""

    async def start(self) -> None:
        """Get ready (schema, seed); must not fail when the server is not up yet."""

    async def close(self) -> None: ...

    def set_chaos(self, chaos: Chaos) -> None:
        """Latency multiplier and error rate for calls that start from now on."""

    def limit_changed(self) -> None:
        """The bulkhead's limit moved: hold no more connections than it allows."""

    async def item(self, item_id: int) -> dict[str, Any] | None: ...

    async def feed(self, page: int) -> list[dict[str, Any]]: ...

    async def add_order(self, order_id: str, item_id: int, quantity: int) -> None: ...

    async def add_signup(self, signup_id: str, email: str, name: str) -> None: ...
