"""The client keys the load generator uses by default: the demo's key for one-client
runs and storms, and sixteen load keys its users spread over (one key for a whole
Locust run would be one client, and the per-client share would shed it as such).

The demo replica accepts them by default (``surgeguard_target_app.settings``); the two
lists are kept apart so that neither app imports the other, and a test keeps them equal.
"""

from __future__ import annotations

DEMO_CLIENT_KEY = "demo-key"
LOAD_CLIENT_KEYS: tuple[str, ...] = tuple(f"load-{n:02d}" for n in range(1, 17))
