"""A controller API that answers with recorded documents, behind a real uvicorn server:
for the states a live stack cannot be put in cheaply or on cue (every tick failing, a
replica that ignores the control plane, a bottleneck held for minutes).

The documents have the shape ``GET /api/v1/state`` and ``/history`` send (the names
shared between the controller and the dashboard for issue 16); a test edits them
between runs of the app. Times are made relative to the moment the recording is built,
so "held 42 s" means 42 s before now.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from surgeguard.asgi import Receive, Scope, Send
from tests.support.asgi import serve_lifespan
from tests.support.servers import ServerThread

DEPENDENCIES = ("cache", "db", "payments", "recommendations")
LONG_REASON = (
    "p99 412 ms > SLO 250 ms and db is the bottleneck (8 of 8 slots busy, its p99 "
    "190 ms = 9.5x its healthy 20 ms): queue_limit 40 -> 36, so that no more wait than "
    "can be served within the queue-time budget (Little's law: 180 req/s x 0.2 s)"
)
NOT_APPLIED = "(replica does not apply the control plane: not applied)"


def signals(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "p50_s": 0.04,
        "p95_s": 0.2,
        "p99_s": 0.31,
        "admitted_per_s": 200.0,
        "good_per_s": 120.0,
        "rejected_per_s": {"queue_full": 50.0},
        "error_rate": 0.1,  # every 5xx: 20/s ...
        "server_error_rate": 0.01,  # ... of which 2/s real, 18/s deliberate 503s
        "in_flight": 30.0,
        "peak_in_flight": 40.0,
        "concurrency_limit": 40.0,
        "queue_depth": 6.0,
        "queue_limit": 36.0,
        "queue_timeout_s": 0.2,
        "queue_wait_p99_s": 0.1,
        "dependencies": {
            d: {"p99_s": 0.19 if d == "db" else 0.003, "utilisation": 1.0 if d == "db" else 0.2}
            | {"p50_s": 0.02, "limit": 8.0, "in_flight": 8.0, "error_rate": 0.0}
            | {"timeout_rate": 0.0}
            for d in DEPENDENCIES
        },
        "jobs_pending": {"surgeguard:jobs:email": 4.0},
        "jobs_lag_s": {"surgeguard:jobs:email": 1.0},
        "jobs_dead": 0.0,
        "penalty_held": 0.0,
        "penalty_holds_per_s": 0.0,
        "stale": False,
    }
    raw.update(over)
    return raw


class Recording:
    """The documents the recorded controller answers with; edit them freely."""

    def __init__(self, now: float, points: int = 60) -> None:
        self.now = now
        knobs = {"concurrency_limit": 40, "queue_limit": 36, "bulkhead.db": 8}
        self.state: dict[str, Any] = {
            "slo_p99_ms": 250.0,
            "algorithm": "aimd",
            "scope": "replica",
            "tick_s": 1.0,
            "last_tick_at": now - 1,
            "control": {"version": 9, "knobs": knobs, "modes": [], "pins": []},
            "replicas": {
                "r1": {
                    "target": "http://r1",
                    "knobs": knobs,
                    "signals": signals(),
                    "reasons": {"queue_limit": LONG_REASON},
                    "applied_version": 9,
                    "published_version": 9,
                    "obeying": True,
                    "disobeying_since": None,
                }
            },
            "aggregate": signals(),
            "bottleneck": {
                "name": "db",
                "sentence": "db: 100% of its 8 slots busy, p99 190 ms = 9.5x its healthy 20 ms",
                "scores": {"db": 9.5, "cache": 0.3},
                "since": now - 42,
                "held_s": 42.0,
            },
            "staleness_s": {"r1": 0.5},
            "bounds": {k: [1, 1000] for k in knobs},
            "modes_available": {"shed_sheddable": "reject sheddable traffic at the door"},
            "tick": {
                "ok": True,
                "failures_total": 0,
                "consecutive_failures": 0,
                "last_error": None,
                "last_error_at": None,
                "last_ok_at": now - 1,
            },
            "last_change": {
                "replica": "r1",
                "knob": "queue_limit",
                "old": 40,
                "new": 36,
                "action": "cut",
                "reason": LONG_REASON,
                "applied": True,
                "at": now - 5,
            },
        }
        # The bottleneck's history: cache, then cpu, then db for the last 42 s.
        self.history = [
            self.point(now - points + n, "cache" if n < 10 else "cpu" if n < points - 42 else "db")
            for n in range(points)
        ]
        self.decisions: list[dict[str, Any]] = [self.state["last_change"]]
        self.audit: list[dict[str, Any]] = []
        self.drills: dict[str, Any] = {"scenarios": {}, "current": None, "recent": []}

    def point(self, at: float, bottleneck: str) -> dict[str, Any]:
        return {
            "at": at,
            "replicas": {
                "r1": {"signals": signals(), "knobs": self.state["replicas"]["r1"]["knobs"]}
            },
            "aggregate": signals(),
            "bottleneck": {"name": bottleneck, "sentence": f"{bottleneck}: the busiest"},
            "modes": [],
            "autopilot": True,
            "decisions": [],
        }

    def documents(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "/api/v1/state": self.state,
                "/api/v1/history": self.history,
                "/api/v1/decisions": self.decisions,
                "/api/v1/audit": self.audit,
                "/api/v1/drills": self.drills,
            }
        )


def _app(recording: Recording) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = recording.documents().get(scope["path"])
        status = 200 if body is not None else 404
        payload = json.dumps(body if body is not None else {"detail": "Not Found"}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


@contextmanager
def recorded_controller() -> Iterator[tuple[str, Recording]]:
    """(its URL, the recording it answers with) until the block ends."""
    recording = Recording(time.time())
    with ServerThread(_app(recording)) as server:
        yield server.url, recording
