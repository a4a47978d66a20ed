"""Locust users, the scenario's shape and a progress feed (run by Locust in its own
process; never imported by the service, the controller or the dashboard).

    surgeguard load --scenario spike --host http://127.0.0.1:8000 --out load-out

runs this file headless (``locust -f loadtest/surgeguard_loadtest/load/locustfile.py`` works too).

Users mix the target's routes (feed and items mostly, some signups and orders) with a
client key each and the routes' own priorities. A ``429`` or ``503`` is the service
saying no on purpose: it is recorded as *shed* (the request name gets `` [shed]``),
not as a failure. Two populations: polite users honour ``Retry-After``; impatient ones
ask again at once, up to three times, which is how retry storms start. Pick them by
class name on Locust's command line (``PoliteUser ImpatientUser``; both by default).

Variables: ``LOADTEST_SCENARIO`` (spike, step, soak, slow_dependency, retry_storm),
``LOADTEST_USERS``, ``LOADTEST_DURATION_S``, ``LOADTEST_BASELINE_USERS`` (see
``loadtest/surgeguard_loadtest/scenarios.py``), ``LOADTEST_CLIENT_KEYS`` (comma-separated, default
``demo-key``). Every second a ``PROGRESS {json}`` line goes to stdout for the runner.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner

from surgeguard_loadtest.load.shapes import SHAPES

KEYS = [k for k in os.environ.get("LOADTEST_CLIENT_KEYS", "demo-key").split(",") if k]
SHED = (429, 503)
SHED_SUFFIX = " [shed]"
MAX_RETRY_AFTER_S = 5.0


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
                    response.request_meta["name"] = name + SHED_SUFFIX
                    response.success()
                    retry_after = float(response.headers.get("Retry-After") or 1)
                elif response.status_code >= 400:
                    # One message per status, so the failures report counts them.
                    response.failure(f"HTTP {response.status_code}")
                    return
                else:
                    return  # success, or no answer at all (Locust's own verdict)
            if attempt < self.retries:
                continue  # impatient: again, at once
            if self.honour_retry_after:
                time.sleep(min(retry_after, MAX_RETRY_AFTER_S))

    def read_item(self) -> None:
        self._call("GET", f"/items/{random.randint(1, 100_000)}", "/items/{id}")


class MixUser(SurgeUser):
    """The route mix: feed and items mostly, some signups and orders."""

    abstract = True

    @task(5)
    def feed(self) -> None:
        self._call("GET", f"/feed?page={random.randint(1, 20)}", "/feed")

    @task(5)
    def item(self) -> None:
        self.read_item()

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


class Impatient:
    """Asks again at once after a shed answer, up to three times (a naive retry loop)."""

    weight: float = 1
    retries = 3
    honour_retry_after = False


class PoliteUser(MixUser):
    weight = 3


class ImpatientUser(Impatient, MixUser):
    pass


class ReaderUser(SurgeUser):
    """Reads items only: every request needs the db (the benchmark's population, so
    that "capacity" is one number, not a function of how the route mix shifts)."""

    abstract = True

    @task
    def item(self) -> None:
        self.read_item()


class PoliteReader(ReaderUser):
    weight = 3


class ImpatientReader(Impatient, ReaderUser):
    pass


# Exactly one shape class in this module's namespace: Locust uses the one it finds.
ScenarioShape = SHAPES[os.environ.get("LOADTEST_SCENARIO", "spike")]


SECONDS_KEPT = 6  # complete wall-clock seconds repeated in each PROGRESS line


def _by_second(environment: Environment, margin_s: int) -> dict[str, list[int]]:
    """Requests sent (completed), shed and failed per wall-clock second (unix, as a
    string), for the last complete seconds. Locust's ``current_rps`` is a mean over
    roughly the ten seconds before the last two, so it trails the server's one-second
    windows; these counts are what the runner puts next to the server's window of the
    same second. A second is complete ``margin_s`` after it ended (a master hears
    from its workers every ``WORKER_REPORT_INTERVAL`` seconds)."""
    stats = environment.runner.stats if environment.runner else None
    if stats is None:
        return {}
    shed = [e for (name, _), e in stats.entries.items() if name.endswith(SHED_SUFFIX)]
    last = int(time.time()) - margin_s
    return {
        str(t): [
            stats.total.num_reqs_per_sec.get(t, 0),
            sum(e.num_reqs_per_sec.get(t, 0) for e in shed),
            stats.total.num_fail_per_sec.get(t, 0),
        ]
        for t in range(last - SECONDS_KEPT + 1, last + 1)
    }


def _progress(environment: Environment) -> None:
    """One ``PROGRESS`` line a second: users, request and shed rates (client side), and
    the counts per wall-clock second (``seconds``)."""
    runner = environment.runner
    assert runner is not None
    margin_s = 1 + (
        math.ceil(WORKER_REPORT_INTERVAL) + 1 if isinstance(runner, MasterRunner) else 0
    )
    started = time.monotonic()
    while True:
        gevent.sleep(1.0)
        stats = runner.stats
        shed_per_s = sum(
            entry.current_rps
            for (name, _), entry in stats.entries.items()
            if name.endswith(SHED_SUFFIX)
        )
        total = stats.total
        line = {
            "t": round(time.monotonic() - started, 1),
            "users": runner.user_count,
            "rps": round(total.current_rps, 1),
            "shed_per_s": round(shed_per_s, 1),
            "fail_per_s": round(total.current_fail_per_sec, 1),
            "p50_ms": total.get_current_response_time_percentile(0.5),
            "p95_ms": total.get_current_response_time_percentile(0.95),
            "requests": total.num_requests,
            "failures": total.num_failures,
            "seconds": _by_second(environment, margin_s),
        }
        print("PROGRESS " + json.dumps(line), file=sys.stdout, flush=True)


def _start_progress(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_progress, environment)


events.test_start.add_listener(_start_progress)  # type: ignore[no-untyped-call]
