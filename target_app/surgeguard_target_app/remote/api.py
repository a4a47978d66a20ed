"""The remote APIs' contract, defined once for the service and its callers.

Recommendations: ``GET /v1/users/{user_id}/recommendations?limit=N`` answers
``{"user_id": int, "items": [item ids]}``. Payments: ``POST /v1/charges`` with
``{"order_id": 32 hex digits, "amount_cents": int}`` answers 201 with the charge.
Bad input is a 422 naming the field; a simulated failure (chaos ``error_rate``) is a
503 naming the service.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

RemoteName = Literal["recommendations", "payments"]
REMOTE_NAMES: tuple[RemoteName, ...] = ("recommendations", "payments")

ITEM_COUNT = 100_000  # item ids are 1..ITEM_COUNT (the demo's catalogue)
MAX_LIMIT = 50  # most recommendations one call may ask for
MAX_AMOUNT_CENTS = 10_000_000

RECOMMENDATIONS_PATH = "/v1/users/{user_id}/recommendations"
CHARGES_PATH = "/v1/charges"

# The service's own /metrics (not a replica's: surgeguard.metric_names names those).
# counter {dependency}: calls received (each then answered, or still inside)
CALLS_RECEIVED_TOTAL = "surgeguard_remote_calls_received_total"
# counter {dependency, outcome}: calls answered (outcome ok or error)
CALLS_TOTAL = "surgeguard_remote_calls_total"
# histogram {dependency}: a call's time inside the service, seconds
CALL_SECONDS = "surgeguard_remote_call_seconds"
CALL_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# gauge {dependency}: calls inside the service now
IN_SERVICE = "surgeguard_remote_in_service"
# gauge {dependency}: most calls inside at once since start
PEAK_IN_SERVICE = "surgeguard_remote_peak_in_service"
# gauge {dependency}: parallel slots (calls served at full speed)
CAPACITY = "surgeguard_remote_capacity"
# gauge {dependency}: the chaos applied now: latency multiplier (1 = calm)
CHAOS_LATENCY_MULTIPLIER = "surgeguard_remote_chaos_latency_multiplier"
# gauge {dependency}: the chaos applied now: share of calls that fail, 0..1
CHAOS_ERROR_RATE = "surgeguard_remote_chaos_error_rate"


class Recommendations(BaseModel):
    user_id: int
    items: list[int]


class ChargeIn(BaseModel):
    order_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the order, 32 hex digits")
    amount_cents: int = Field(ge=1, le=MAX_AMOUNT_CENTS)


class Charge(BaseModel):
    charge_id: str
    order_id: str
    amount_cents: int
    status: Literal["captured"] = "captured"


def recommended_items(user_id: int, limit: int) -> list[int]:
    """The same ``limit`` item ids for the same user every time (a stand-in model)."""
    return [(user_id * 7 + k * 13) % ITEM_COUNT + 1 for k in range(limit)]
