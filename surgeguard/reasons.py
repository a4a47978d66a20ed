"""Why a request was turned away: the ``reason`` label of ``surgeguard_rejections_total``
and the ``X-Surgeguard-Reason`` header of the answer. Defined once, imported by the
limiter, the door, the metrics, the controller and the dashboard alike."""

from __future__ import annotations

# The limiter's reasons (a 429 each).
QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"
PRIORITY = "priority"
CLIENT_SHARE = "client_share"
LIMITER_REASONS: tuple[str, ...] = (QUEUE_FULL, QUEUE_TIMEOUT, PRIORITY, CLIENT_SHARE)

# The door's reasons, decided before the limiter is asked.
MODE = "mode"  # a degradation mode (429 for shed_sheddable, 503 for read_only writes)
UNAUTHORIZED = "unauthorized"  # 401: missing or unknown client key
DUPLICATE_KEY = "duplicate_key"  # 400: more than one client key header
PENALTY_FULL = "penalty_full"  # 429 + Connection: close: came back early, box full
DOOR_REASONS: tuple[str, ...] = (MODE, UNAUTHORIZED, DUPLICATE_KEY, PENALTY_FULL)

REJECTION_REASONS: tuple[str, ...] = (*LIMITER_REASONS, *DOOR_REASONS)

# Not a rejection the client sees: it went away while waiting (counted apart).
DISCONNECTED = "client_disconnected"

REASON_DETAIL: dict[str, str] = {
    QUEUE_FULL: "The service is at capacity and its wait queue is full.",
    QUEUE_TIMEOUT: "The request waited too long for a free slot.",
    PRIORITY: "Shed in favour of more important traffic while the service is saturated.",
    CLIENT_SHARE: "This client key already holds its share of the service's capacity.",
    MODE: "Rejected by an active degradation mode.",
    UNAUTHORIZED: "Missing or unknown client key in X-Api-Key.",
    DUPLICATE_KEY: "More than one X-Api-Key header: send exactly one.",
    PENALTY_FULL: (
        "Asked again before the Retry-After it was given, while the service holds "
        "as many early requests as it can. Wait for Retry-After before retrying."
    ),
}
