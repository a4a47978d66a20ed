"""What a load run asks of the controller: chaos on the scenario's schedule (and back
to normal at the end, whatever happens) and the start/end marks for the charts.
Every failure is one warning line: the load test goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import httpx

from surgeguard_loadtest.load.locust_process import LocustOutput
from surgeguard_loadtest.load.options import LoadOptions


class ControllerCalls:
    """The few operator calls a run makes; every failure is one warning line."""

    def __init__(self, opts: LoadOptions, warn: Callable[[str], None]) -> None:
        self.base = (opts.controller_url or "").rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Bearer {opts.admin_token}"}
        self.warn = warn
        self.enabled = bool(opts.controller_url and opts.admin_token)
        # A controller drill's chaos goes through its drill: the controller undoes it
        # even when this run dies before its own undo.
        self.chaos_path = f"/drills/{opts.drill_id}/chaos" if opts.drill_id else "/chaos"

    def call(self, method: str, path: str, body: dict[str, Any]) -> bool:
        if not self.enabled:
            return False
        try:
            response = httpx.request(
                method,
                self.base + path,
                json=body,
                headers=self.headers,
                timeout=5,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            self.warn(f"controller {method} {path}: {exc}")
            return False
        if response.status_code >= 400:
            self.warn(f"controller {method} {path}: {response.status_code} {response.text[:200]}")
            return False
        return True

    def chaos(self, dependency: str, multiplier: float, reason: str) -> bool:
        body = {"latency_multiplier": multiplier, "error_rate": 0.0, "reason": reason}
        return self.call("PUT", f"{self.chaos_path}/{dependency}", body)

    def mark(self, event: str, opts: LoadOptions) -> None:
        body = {
            "event": event,
            "id": opts.run_id,
            "scenario": opts.scenario.name,
            "users": opts.scenario.users,
            "duration_s": opts.scenario.duration_s,
            "reason": f"surgeguard load --scenario {opts.scenario.name}",
        }
        self.call("POST", "/drills/marks", body)


class ChaosSchedule(threading.Thread):
    """Applies the scenario's chaos events on Locust's clock (from its first progress
    line); ``undo`` puts every touched dependency back (called whatever happens)."""

    def __init__(
        self, opts: LoadOptions, controller: ControllerCalls, locust: LocustOutput
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.events = opts.scenario.chaos
        self.controller = controller
        self.locust = locust
        self.applied: list[dict[str, Any]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self.locust.started.wait(0.2):
            if self._stop_event.is_set():
                return
        for event in self.events:
            due = self.locust.started_mono + event.at_s
            if self._stop_event.wait(max(0.0, due - time.monotonic())):
                return
            ok = self.controller.chaos(
                event.dependency, event.latency_multiplier, "load scenario: slow dependency"
            )
            self.applied.append({**asdict(event), "applied": ok})

    def undo(self) -> None:
        self._stop_event.set()
        for dependency in {a["dependency"] for a in self.applied if a["applied"]}:
            self.controller.chaos(dependency, 1.0, "load scenario over: back to normal")
