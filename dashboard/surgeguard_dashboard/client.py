"""The controller's HTTP API, as typed calls: the only place the dashboard speaks HTTP.

Every failure is a ``ControllerError`` carrying one line a person can read: the
controller's own ``detail`` for a refused request (401, 404, 422), or what went wrong
on the way (unreachable, timed out, not JSON). Never a stack trace, never the token.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from surgeguard_dashboard.drills import Drill, Drills
from surgeguard_dashboard.model import AuditEntry, Control, Decision, State, Tick

API = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(3.0, connect=1.0)  # seconds; a live view must not hang
# Stopping a drill waits for the load generator to stop Locust and write its reports
# (the controller sends SIGKILL after 15 s): allow that, once, on an operator's click.
STOP_TIMEOUT = httpx.Timeout(30.0, connect=1.0)


class ControllerError(Exception):
    """A request that did not succeed. ``status`` is None when no answer came back."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class ControllerClient:
    def __init__(self, base_url: str, http: httpx.Client | None = None) -> None:
        """``http``: a client to reuse (tests, or one shared per process); by default one
        of its own with short timeouts."""
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    # -- reads (open) -------------------------------------------------------------------

    def state(self) -> State:
        return State.parse(self._request("GET", "/state"))

    def history(self, seconds: int, since: float | None = None) -> list[Tick]:
        """Tick records of the last ``seconds`` (1..3600), oldest first; with ``since``
        (unix seconds, the controller's clock) only those after it."""
        params: dict[str, Any] = {"seconds": max(1, min(3600, int(seconds)))}
        if since is not None and math.isfinite(since):
            params["since"] = since
        raw = self._request("GET", "/history", params=params)
        records = [Tick.parse(r) for r in raw] if isinstance(raw, list) else []
        # Filter here too: a controller without ``since`` answers the whole window.
        return [t for t in records if since is None or t.at > since]

    def decisions(self, limit: int = 50) -> list[Decision]:
        raw = self._request("GET", "/decisions", params={"limit": limit})
        return [Decision.parse(d) for d in raw] if isinstance(raw, list) else []

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        raw = self._request("GET", "/audit", params={"limit": limit})
        return [AuditEntry.parse(a) for a in raw] if isinstance(raw, list) else []

    def drills(self, limit: int = 50) -> Drills:
        """Scenario defaults, the current drill and the ``limit`` most recent (1..200)."""
        params = {"limit": max(1, min(200, int(limit)))}
        return Drills.parse(self._request("GET", "/drills", params=params))

    # -- operator writes (bearer token) -------------------------------------------------

    def start_drill(
        self, token: str, scenario: str, *, users: int, duration_s: float, reason: str
    ) -> Drill:
        body = {"scenario": scenario, "users": users, "duration_s": duration_s, "reason": reason}
        return Drill.parse(self._authorized(token, "POST", "/drills", json=body))

    def stop_drill(self, token: str, *, reason: str) -> Drill:
        raw = self._authorized(
            token, "POST", "/drills/stop", json={"reason": reason}, timeout=STOP_TIMEOUT
        )
        return Drill.parse(raw)

    def set_mode(self, token: str, mode: str, *, active: bool, reason: str) -> Control:
        body = {"active": active, "reason": reason}
        return self._write(token, "PUT", f"/modes/{mode}", json=body)

    def set_knob(
        self, token: str, knob: str, *, value: int | None, pin: bool | None, reason: str
    ) -> Control:
        body = {"value": value, "pin": pin, "reason": reason}
        return self._write(token, "PUT", f"/knobs/{knob}", json=body)

    def unpin(self, token: str, knob: str, *, reason: str) -> Control:
        return self._write(token, "DELETE", f"/knobs/{knob}/pin", params={"reason": reason})

    def set_autopilot(self, token: str, *, enabled: bool, reason: str) -> Control:
        body = {"enabled": enabled, "reason": reason}
        return self._write(token, "PUT", "/autopilot", json=body)

    def set_chaos(
        self,
        token: str,
        dependency: str,
        *,
        latency_multiplier: float,
        error_rate: float,
        reason: str,
    ) -> Control:
        body = {
            "latency_multiplier": latency_multiplier,
            "error_rate": error_rate,
            "reason": reason,
        }
        return self._write(token, "PUT", f"/chaos/{dependency}", json=body)

    # -- plumbing -----------------------------------------------------------------------

    def _write(self, token: str, method: str, path: str, **kwargs: Any) -> Control:
        return Control.parse(self._authorized(token, method, path, **kwargs))

    def _authorized(self, token: str, method: str, path: str, **kwargs: Any) -> Any:
        if not token:
            raise ControllerError("an admin token is needed for operator actions", 401)
        headers = {"Authorization": f"Bearer {token}"}
        return self._request(method, path, headers=headers, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{API}{path}"
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise ControllerError(
                f"the controller at {self.base_url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            # The exception's own text names the cause (refused, unknown host, ...);
            # requests carry no secret in their text, only headers do.
            cause = str(exc) or type(exc).__name__
            raise ControllerError(
                f"cannot reach the controller at {self.base_url}: {cause}"
            ) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ControllerError(
                    f"the controller answered {path} with something that is not JSON",
                    response.status_code,
                ) from None
        raise ControllerError(_detail(response), response.status_code)


def _detail(response: httpx.Response) -> str:
    """The controller's ``detail`` message, else the HTTP status in words."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return f"{detail} (HTTP {response.status_code})"
    if detail is not None:
        return f"{detail!r} (HTTP {response.status_code})"
    return f"the controller answered HTTP {response.status_code} {response.reason_phrase}"
