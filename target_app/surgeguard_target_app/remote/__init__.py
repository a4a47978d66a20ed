"""The demo's remote APIs: recommendations and payments as small HTTP services of
their own, each one process with its own capacity and chaos, shared by every replica.

``api`` is what both sides agree on (names, routes, bodies, metric names); ``app`` and
``server`` are the service (``surgeguard remote NAME``); ``chaos`` is how it follows the
control plane's chaos for its name; ``client`` is the replica's side (over HTTP when
``SURGEGUARD_<NAME>_URL`` is set, else the in-process simulation).
"""
