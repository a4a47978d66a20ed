"""Client keys and the highest priority each may claim.

``SURGEGUARD_CLIENT_KEYS=mobile-app:critical,partner:normal,batch:sheddable,plain``:
a key may ask for its ceiling or anything less important (``X-Priority``), never
more; a bare key's ceiling is normal. Priority is earned with the key, not claimed
with a header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from surgeguard.priority import Priority

_BY_NAME = {p.label: p for p in Priority}


class ClientKeyError(ValueError):
    """A key list that cannot be used; the message names the bad entry."""


class ClientKeys:
    """Known keys (as the bytes a header carries) and their priority ceilings."""

    def __init__(self, ceilings: Mapping[str, Priority]) -> None:
        if not ceilings:
            raise ClientKeyError("needs at least one client key")
        for key in ceilings:
            if not key or key != key.strip() or not key.isascii() or not key.isprintable():
                raise ClientKeyError(f"client key {key!r} must be printable ASCII without spaces")
        self.ceilings: dict[bytes, Priority] = {k.encode(): p for k, p in ceilings.items()}

    @classmethod
    def parse(cls, text: str) -> ClientKeys:
        """``key[:ceiling],...`` (ceiling: critical | normal | sheddable)."""
        return cls.from_entries(part.strip() for part in text.split(",") if part.strip())

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> ClientKeys:
        ceilings: dict[str, Priority] = {}
        for entry in entries:
            key, sep, level = entry.partition(":")
            key = key.strip()
            if sep:
                ceiling = _BY_NAME.get(level.strip().lower())
                if ceiling is None:
                    raise ClientKeyError(
                        f"client key {key!r}: unknown ceiling {level.strip()!r} "
                        f"(allowed: {', '.join(_BY_NAME)})"
                    )
            else:
                ceiling = Priority.NORMAL
            if key in ceilings and ceilings[key] is not ceiling:
                raise ClientKeyError(f"client key {key!r} is listed twice with different ceilings")
            ceilings[key] = ceiling
        return cls(ceilings)

    def ceiling(self, key: bytes) -> Priority | None:
        """The key's ceiling; None for an unknown key."""
        return self.ceilings.get(key)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(k.decode() for k in self.ceilings)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            key = key.encode("utf-8", "surrogateescape")
        return key in self.ceilings
