"""Garbage-collector settings for a process that holds thousands of requests.

During a storm the penalty box holds thousands of requests for seconds each, so
their objects survive the young collections and CPython's full collection keeps
finding more "long-lived" objects to walk: measured on one 2-core machine under
10,000 impatient connections, full collections ran every second or two, took
0.3-0.9 s each, and freed nothing (every object was still in use, and refcounting
frees the rest). Each one stopped the event loop: health probes and admitted
requests waited for it.

``quiet_full_collections`` keeps the young collections (they catch short-lived
cycles cheaply), freezes what start-up built (modules, the app, its routes: never
garbage), and makes a full collection rare instead of continual. Memory stayed flat
across repeated storms with it (the README's storm benchmark reports the RSS).
"""

from __future__ import annotations

import gc

# Young collections as CPython's default; a full one only after this many middle ones
# (CPython: 10), about once per 700 x 10 x 100,000 = 700 million net allocations:
# minutes apart under a storm, so cyclic garbage that reached the old generation
# is still collected, just not every second.
THRESHOLDS = (700, 10, 100_000)


def quiet_full_collections(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Call once, when the service is built and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
