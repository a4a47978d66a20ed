"""The penalty box: clients that ignore ``Retry-After`` wait before they are answered.

A fast 429 is only cheap while the client waits before asking again. A client that
retries at once turns every rejection into another request, and at a few thousand
such clients the event loop spends itself saying no. So the door remembers, per
client, when it told it to come back, and a request that arrives before then is not
decided at once: it is held (a timer, no CPU while it waits) until that time, then
decided like any other. Each early return multiplies the ``Retry-After`` the client
gets next by ``growth`` (default 4), up to a bound, so N impatient clients settle at
about N / bound decisions per second instead of as many as their connections can
carry. (A factor of 4 reaches a 30 s bound in three early returns; doubling took five,
and the decisions spent on the way were most of a storm's first 15 s.)

A polite client sees no difference: its first 429 is immediate, and a request that
comes after its ``Retry-After`` is decided at once and forgives any earlier strikes.

Who "the client" is, is the caller's choice (the middleware uses the TCP connection,
or an address a trusted proxy put in a header): any hashable value.

Pure: time comes from the injected clock; holding is the caller's job (it sleeps
for the seconds ``arrive`` returns, then calls ``released``).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

# ``arrive``'s answer when the request came back early but the box holds its maximum:
# answer at once, and close the connection so a hammering client has to reconnect.
FULL = -1.0


class _Entry:
    __slots__ = ("held_since_told", "retry_at", "strikes")

    def __init__(self, retry_at: float) -> None:
        self.retry_at = retry_at  # clock time the client was told to come back at
        self.strikes = 0  # early returns since it last came back on time
        self.held_since_told = False  # it has been held since it was last told to wait


class PenaltyBox:
    """Per-client ``Retry-After`` deadlines and strikes, with a bound on held requests.

    ``max_retry_after_s``: the longest ``Retry-After`` handed out (seconds).
    ``growth``: the factor per early return. ``spread``: 0..1, how much of a grown
    ``Retry-After`` is randomised away (0: exactly grown).
    ``max_held``: how many requests may be held at once (requests).
    ``max_clients``: how many clients are remembered (the oldest go first).
    ``forget_after_s``: a client is forgotten this long after its deadline passed
    (seconds; default twice ``max_retry_after_s``).
    """

    def __init__(
        self,
        *,
        max_retry_after_s: int = 30,
        growth: int = 4,
        spread: float = 0.5,
        max_held: int = 16_384,
        max_clients: int = 200_000,
        forget_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_retry_after_s < 1:
            raise ValueError(f"max_retry_after_s must be >= 1 s, got {max_retry_after_s}")
        if growth < 1:
            raise ValueError(f"growth must be >= 1 (a factor per early return), got {growth}")
        if not 0.0 <= spread < 1.0:
            raise ValueError(f"spread must be in [0, 1), got {spread}")
        if max_held < 0:
            raise ValueError(f"max_held must be >= 0 requests, got {max_held}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        forget = 2.0 * max_retry_after_s if forget_after_s is None else forget_after_s
        if forget < 0:
            raise ValueError(f"forget_after_s must be >= 0 s, got {forget}")
        self.max_retry_after_s = max_retry_after_s
        self.growth = growth
        self.spread = spread
        self._random = (rng or random.Random()).random
        self.max_held = max_held
        self.max_clients = max_clients
        self.forget_after_s = forget
        self._clock = clock
        # Oldest "told to wait" first: expiry and eviction pop from the front.
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.held = 0  # requests held now
        self.holds = 0  # requests held since start
        self.full = 0  # early requests turned away because the box was full

    @property
    def clients(self) -> int:
        """Clients remembered now (with a deadline, passed or not)."""
        return len(self._entries)

    def arrive(self, client: Hashable) -> float:
        """A request from ``client`` arrives: how long it must be held before it is
        decided (seconds; 0.0: decide now; ``FULL``: it is early but the box is full).

        A positive answer counts the request as held: call ``released`` when its hold
        ends (however it ends)."""
        entry = self._entries.get(client)
        if entry is None:
            return 0.0
        delay = entry.retry_at - self._clock()
        if delay <= 0.0:
            if not entry.held_since_told:
                # Came back on time by itself: a polite client, forgive it.
                del self._entries[client]
            return 0.0
        if self.held >= self.max_held:
            self.full += 1
            return FULL
        entry.strikes += 1
        entry.held_since_told = True
        self.held += 1
        self.holds += 1
        return delay

    def released(self) -> None:
        """A hold that ``arrive`` started has ended."""
        self.held -= 1

    def told_to_wait(self, client: Hashable, retry_after_s: int) -> int:
        """``client`` is being turned away with a ``Retry-After`` of ``retry_after_s``
        (seconds, the caller's usual, jittered value): returns the value to send, and
        remembers the deadline. For a client with strikes it is ``growth`` times more
        per early return, capped at ``max_retry_after_s``, then spread down by up to
        ``spread`` of itself (never below the usual value)."""
        now = self._clock()
        entries = self._entries
        entry = entries.pop(client, None)
        strikes = entry.strikes if entry is not None else 0
        seconds = max(1, retry_after_s)
        if strikes:
            grown = min(self.max_retry_after_s, seconds * self.growth ** min(strikes, 32))
            # Somewhere in [1 - spread, 1] x grown: clients rejected together (a storm
            # starts at once) would otherwise all come back in the same second.
            seconds = max(seconds, grown - int(self._random() * self.spread * (grown + 1)))
        if entry is None:
            entry = _Entry(now + seconds)
            self._forget_old(now)
        else:
            entry.retry_at = now + seconds
            entry.held_since_told = False
        entries[client] = entry  # to the back: the most recently told
        return seconds

    def strikes(self, client: Hashable) -> int:
        """Early returns counted against ``client`` (0 when it is not remembered)."""
        entry = self._entries.get(client)
        return entry.strikes if entry is not None else 0

    def _forget_old(self, now: float) -> None:
        """Drop clients whose deadline passed long ago, and the oldest past the bound.

        Amortised: it stops at the first entry still worth keeping (entries are in the
        order they were last told, roughly the order of their deadlines)."""
        entries = self._entries
        horizon = now - self.forget_after_s
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.retry_at > horizon and len(entries) < self.max_clients:
                return
            entries.popitem(last=False)
