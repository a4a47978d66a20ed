"""Who may write: named operators, each with a bearer token, and the door every write
passes before its body is read.

``Operators`` maps a presented token to an operator's name (compared in constant time,
as bytes, so a header of any bytes is only ever a wrong token). ``WriteDoor`` is the
controller's outermost ASGI middleware for writes (any method but GET, HEAD and
OPTIONS): a client address with too many failed attempts in the last minute gets 429
with ``Retry-After``; a missing or wrong token gets 401 and counts as a failed
attempt; otherwise the operator's name goes into the request's state (``who`` in the
audit) and the request goes on, to the body limit and the routes. The body is never
read before the token checks out.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter

from surgeguard.asgi import ASGIApp, Receive, Scope, Send

MIN_TOKEN_LENGTH = 24  # characters
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPERATOR_STATE = "operator"  # request.state attribute: the name of who is writing


class Operators:
    """The operators and their tokens (``name -> token``)."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._tokens = [(name, token.encode()) for name, token in (tokens or {}).items()]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._tokens]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def with_operator(self, name: str, token: str) -> Operators:
        return Operators({**{n: t.decode() for n, t in self._tokens}, name: token})

    def name_of(self, presented: bytes) -> str | None:
        """Whose token ``presented`` is (None: nobody's). Every token is compared, each
        in constant time, so the answer's timing says nothing about the tokens."""
        found = None
        for name, token in self._tokens:
            if hmac.compare_digest(presented, token) and found is None:
                found = name
        return found


def parse_tokens(text: str, source: str) -> dict[str, str]:
    """``"alice:<token>,bob:<token>"`` (commas or new lines between operators) as
    ``name -> token``; raises ``ValueError`` naming ``source`` and the problem (never
    the token itself)."""
    tokens: dict[str, str] = {}
    for part in re.split(r"[,\n]", text):
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        name, sep, token = part.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not OPERATOR_NAME.match(name):
            raise ValueError(
                f"{source}: each entry must be name:token with a name of letters, digits "
                f"and _.@- (got an entry starting {name[:16]!r})"
            )
        if name in tokens:
            raise ValueError(f"{source}: operator {name!r} is named twice")
        tokens[name] = token
    return tokens


def check_tokens(tokens: Mapping[str, str], source: str) -> None:
    """Refuse a token shorter than ``MIN_TOKEN_LENGTH`` or one two operators share."""
    for name, token in tokens.items():
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{source}: the token of operator {name!r} is {len(token)} characters; at "
                f"least {MIN_TOKEN_LENGTH} are required (make one with: python -c "
                "'import secrets; print(secrets.token_urlsafe(24))')"
            )
    if len(set(tokens.values())) < len(tokens):
        raise ValueError(f"{source}: two operators share a token; give each its own")


class FailedAttempts:
    """Failed token checks per client address: more than ``limit`` within ``window_s``
    seconds locks the address out until the oldest of them is ``window_s`` old."""

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"limit must be >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        seen = self._seen.get(address, deque())
        cutoff = self._clock() - self.window_s
        while seen and seen[0] <= cutoff:
            seen.popleft()
        return seen

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again; None when it may now."""
        seen = self._recent(address)
        if not seen:
            self._seen.pop(address, None)
            return None
        if len(seen) < self.limit:
            return None
        return max(0.0, seen[0] + self.window_s - self._clock())

    def failed(self, address: str) -> None:
        if address not in self._seen and len(self._seen) >= self.max_addresses:
            for old in [a for a in self._seen if not self._recent(a)]:
                del self._seen[old]
            if len(self._seen) >= self.max_addresses:  # a flood of addresses: forget the first
                del self._seen[next(iter(self._seen))]
        seen = self._recent(address)
        seen.append(self._clock())
        self._seen[address] = seen


async def _answer(send: Send, status: int, detail: str, headers: Mapping[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the body, if any, is never read
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def bearer(scope: Scope) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, as sent (bytes)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class WriteDoor:
    """Checks the operator of every write before anything else reads the request."""

    def __init__(
        self,
        app: ASGIApp,
        operators: Operators,
        *,
        failures: FailedAttempts | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        self.operators = operators
        self.failures = failures or FailedAttempts()
        self.failed_total = Counter(
            "surgeguard_controller_auth_failures",
            "Operator writes refused for a missing or wrong token (429s not counted).",
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        if not self.operators:
            await _answer(send, 401, "no admin token is configured: operator writes are off", {})
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        wait = self.failures.retry_after(address)
        if wait is not None:
            await _answer(
                send,
                429,
                f"too many failed token checks from {address}: try again in {math.ceil(wait)} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
            return
        presented = bearer(scope)
        name = self.operators.name_of(presented) if presented else None
        if name is None:
            self.failures.failed(address)
            self.failed_total.inc()
            await _answer(
                send, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )
            return
        scope.setdefault("state", {})[OPERATOR_STATE] = name
        await self.app(scope, receive, send)
