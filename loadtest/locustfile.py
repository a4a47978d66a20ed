"""Locust users and the spike shape (run by Locust in its own process, never imported
by the service, the controller or the dashboard).

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Users mix the target's routes (feed and items mostly, some signups and orders) with a
client key each and the routes' own priorities. A ``429`` or ``503`` is the service
saying no on purpose: it is recorded as *shed* (the request name gets `` [shed]``), not
as a failure. Two populations: polite users honour ``Retry-After``; impatient ones ask
again at once, up to three times, which is how retry storms start.

The spike shape: ``LOADTEST_BASELINE_USERS`` (50) for ``LOADTEST_BASELINE_S`` (30 s),
then ``LOADTEST_SPIKE_USERS`` (10,000) spawned within ``LOADTEST_RAMP_S`` (10 s), held
``LOADTEST_HOLD_S`` (60 s), back to the baseline for ``LOADTEST_BASELINE_S``, then stop.
Client keys: ``LOADTEST_CLIENT_KEYS`` (comma-separated, default ``demo-key``).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, task

KEYS = [k for k in os.environ.get("LOADTEST_CLIENT_KEYS", "demo-key").split(",") if k]
SHED = (429, 503)


def _setting(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


class SurgeUser(FastHttpUser):
    abstract = True
    wait_time = between(0.5, 1.5)
    retries = 0  # immediate retries after a shed answer
    honour_retry_after = True

    def on_start(self) -> None:
        self.headers = {"X-Api-Key": random.choice(KEYS)}

    def _call(self, method: str, path: str, name: str, **kwargs: Any) -> None:
        for attempt in range(self.retries + 1):
            with self.client.request(
                method, path, name=name, headers=self.headers, catch_response=True, **kwargs
            ) as response:
                if response.status_code in SHED:
                    response.request_meta["name"] = f"{name} [shed]"
                    response.success()
                    retry_after = float(response.headers.get("Retry-After") or 1)
                else:
                    return  # anything else keeps Locust's own verdict
            if attempt < self.retries:
                continue  # impatient: again, at once
            if self.honour_retry_after:
                time.sleep(min(retry_after, 5.0))

    @task(5)
    def feed(self) -> None:
        self._call("GET", f"/feed?page={random.randint(1, 20)}", "/feed")

    @task(5)
    def item(self) -> None:
        self._call("GET", f"/items/{random.randint(1, 100_000)}", "/items/{id}")

    @task(1)
    def signup(self) -> None:
        n = random.randint(1, 10**9)
        self._call(
            "POST",
            "/signup",
            "/signup",
            json={"email": f"user{n}@example.com", "name": f"User {n}"},
        )

    @task(1)
    def order(self) -> None:
        self._call(
            "POST",
            "/orders",
            "/orders",
            json={"item_id": random.randint(1, 100_000), "quantity": 1},
        )


class PoliteUser(SurgeUser):
    weight = 3


class ImpatientUser(SurgeUser):
    weight = 1
    retries = 3
    honour_retry_after = False


class SpikeShape(LoadTestShape):
    """Baseline, a spike to ``LOADTEST_SPIKE_USERS`` within ``LOADTEST_RAMP_S``, hold,
    baseline again, stop. ``tick`` returns (users, spawn rate per second) or None."""

    baseline_users = int(_setting("LOADTEST_BASELINE_USERS", 50))
    spike_users = int(_setting("LOADTEST_SPIKE_USERS", 10_000))
    baseline_s = _setting("LOADTEST_BASELINE_S", 30)
    ramp_s = max(1.0, _setting("LOADTEST_RAMP_S", 10))
    hold_s = _setting("LOADTEST_HOLD_S", 60)

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()  # type: ignore[no-untyped-call]
        rate = max(1.0, (self.spike_users - self.baseline_users) / self.ramp_s)
        if t < self.baseline_s:
            return self.baseline_users, float(max(1, self.baseline_users))
        if t < self.baseline_s + self.ramp_s + self.hold_s:
            return self.spike_users, rate
        if t < 2 * self.baseline_s + self.ramp_s + self.hold_s:
            return self.baseline_users, rate
        return None
