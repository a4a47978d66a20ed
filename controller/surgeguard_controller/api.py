"""The controller's HTTP API under ``/api/v1``: the one door for operator writes.

Reads are open. Writes need ``Authorization: Bearer <SURGEGUARD_ADMIN_TOKEN>``, are
validated whole before anything changes (404 for an unknown knob, mode or
dependency; 422 naming the field and its range), become one new version of the
control document, and are audited: what, old -> new, when, from where, and why.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from surgeguard.chaos import LATENCY_MULTIPLIER_RANGE, Chaos
from surgeguard.controlplane import ControlState, read_state
from surgeguard.knobs import DEPENDENCIES, KNOB_SPECS, KnobError, knob_spec
from surgeguard.modes import Mode
from surgeguard_controller.loop import Controller, jsonable

Reason = Annotated[str, Field(min_length=1, max_length=200)]
LOW, HIGH = LATENCY_MULTIPLIER_RANGE


class ModeIn(BaseModel):
    active: bool
    reason: Reason


class KnobIn(BaseModel):
    value: int | None = None
    pin: bool | None = None
    reason: Reason


class AutopilotIn(BaseModel):
    enabled: bool
    reason: Reason


class ChaosIn(BaseModel):
    latency_multiplier: float = Field(1.0, ge=LOW, le=HIGH)
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    reason: Reason


def _field_range(name: str) -> str:
    """ " (allowed: [low, high])" for a bounded body field."""
    for model in (ModeIn, KnobIn, AutopilotIn, ChaosIn):
        info = model.model_fields.get(name)
        if info is not None:
            low = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
            high = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
            if low is not None and high is not None:
                return f" (allowed: [{low}, {high}])"
    return ""


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{field}: {error['msg']}{_field_range(str(error['loc'][-1]))}")
    return "; ".join(parts)


def operator(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Who is writing (their address), once their bearer token checks out; else 401."""
    admin_token: str | None = request.app.state.admin_token
    if not admin_token:
        raise HTTPException(401, "no admin token is configured: operator writes are off")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token, admin_token):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return request.client.host if request.client else "unknown"


Operator = Annotated[str, Depends(operator)]


def build_api(controller: Controller) -> APIRouter:
    """Routes; the app that includes them sets ``app.state.admin_token``."""
    router = APIRouter(prefix="/api/v1")

    async def audit(who: str, what: str, old: Any, new: Any, reason: str) -> None:
        await controller.store.add_audit(
            {
                "at": controller.wall(),
                "who": who,
                "what": what,
                "old": old,
                "new": new,
                "reason": reason,
            }
        )

    @router.get("/state")
    async def state() -> dict[str, Any]:
        control = await read_state(controller.redis)
        return {
            "slo_p99_ms": controller.config.slo_s * 1000,
            "algorithm": controller.config.algorithm,
            "scope": controller.scope,
            "tick_s": controller.tick_s,
            "last_tick_at": jsonable(controller.last_tick_at),
            "tick": controller.health.json(),
            "last_change": controller.last_change,
            "control": _control_json(control),
            "replicas": {
                v.replica: {
                    "target": v.target,
                    "knobs": v.knobs,
                    "signals": jsonable(v.signals),
                    "reasons": controller.latest_reasons.get(v.replica, {}),
                    **v.obedience_json(),
                }
                for v in controller.replicas.values()
            },
            "aggregate": jsonable(controller.aggregate),
            "bottleneck": controller.bottleneck,
            "staleness_s": controller.staleness(),
            "bounds": {k: list(controller.config.bounds_of(k)) for k in KNOB_SPECS},
            "modes_available": {m.value: m.description for m in Mode},
        }

    @router.get("/history")
    async def history(
        seconds: Annotated[int, Query(ge=1, le=3600)] = 300,
        since: Annotated[float | None, Query(ge=0)] = None,
    ) -> Response:
        """Tick records of the last ``seconds``; with ``since`` (unix seconds), only
        those after it, so a live view fetches just what is new."""
        start = controller.wall() - seconds
        if since is not None:
            start = max(start, math.nextafter(since, math.inf))
        body = await controller.store.history_json(start)
        return Response(body, media_type="application/json")

    @router.get("/decisions")
    async def decisions(limit: Annotated[int, Query(ge=1, le=2000)] = 100) -> list[dict[str, Any]]:
        return await controller.store.decisions(limit)

    @router.get("/audit")
    async def audit_log(limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> list[dict[str, Any]]:
        return await controller.store.audit(limit)

    @router.put("/modes/{mode}")
    async def set_mode(mode: str, body: ModeIn, who: Operator) -> dict[str, Any]:
        try:
            chosen = Mode(mode)
        except ValueError:
            raise HTTPException(
                404, f"unknown mode {mode!r}: allowed are {', '.join(m.value for m in Mode)}"
            ) from None
        before = await read_state(controller.redis)

        def change(s: ControlState) -> ControlState:
            modes = s.modes | {chosen} if body.active else s.modes - {chosen}
            return replace(s, modes=frozenset(modes))

        after = await controller.writer.update(change)
        await audit(who, f"mode {chosen.value}", chosen in before.modes, body.active, body.reason)
        return _control_json(after)

    @router.put("/knobs/{knob}")
    async def set_knob(knob: str, body: KnobIn, who: Operator) -> dict[str, Any]:
        spec = _known_knob(knob)
        before = await read_state(controller.redis)
        if body.value is None and body.pin is None:
            raise HTTPException(422, "give a value, a pin, or both")
        value = body.value if body.value is not None else before.knobs.get(knob)
        if value is None:
            raise HTTPException(422, f"value is required: {knob} has no published value yet")
        try:
            spec.check(value)
        except KnobError as exc:
            raise HTTPException(422, f"value: {exc}") from None

        def change(s: ControlState) -> ControlState:
            knobs = {**s.knobs, knob: value}
            # An operator's value is for every replica: drop per-replica tuning of it.
            replicas = {
                r: {k: v for k, v in ks.items() if k != knob} for r, ks in s.replicas.items()
            }
            pins = set(s.pins)
            if body.pin is not None:
                (pins.add if body.pin else pins.discard)(knob)
            return replace(s, knobs=knobs, replicas=replicas, pins=frozenset(pins))

        after = await controller.writer.update(change)
        await audit(
            who,
            f"knob {knob}",
            {"value": _observed(controller, before, knob), "pinned": knob in before.pins},
            {"value": value, "pinned": knob in after.pins},
            body.reason,
        )
        return _control_json(after)

    @router.delete("/knobs/{knob}/pin")
    async def unpin(
        knob: str,
        who: Operator,
        reason: Annotated[str, Query(min_length=1, max_length=200)] = "unpinned",
    ) -> dict[str, Any]:
        _known_knob(knob)
        before = await read_state(controller.redis)
        after = await controller.writer.update(lambda s: replace(s, pins=s.pins - {knob}))
        await audit(who, f"pin {knob}", knob in before.pins, False, reason)
        return _control_json(after)

    @router.put("/autopilot")
    async def set_autopilot(body: AutopilotIn, who: Operator) -> dict[str, Any]:
        before = await read_state(controller.redis)
        after = await controller.writer.update(lambda s: replace(s, autopilot=body.enabled))
        await audit(who, "autopilot", before.autopilot, body.enabled, body.reason)
        return _control_json(after)

    @router.put("/chaos/{dependency}")
    async def set_chaos(
        dependency: Annotated[str, Path()], body: ChaosIn, who: Operator
    ) -> dict[str, Any]:
        if dependency not in DEPENDENCIES:
            raise HTTPException(
                404, f"unknown dependency {dependency!r}: allowed are {', '.join(DEPENDENCIES)}"
            )
        chaos = Chaos(body.latency_multiplier, body.error_rate)
        before = await read_state(controller.redis)
        after = await controller.writer.set_chaos(dependency, chaos)
        old = before.chaos.get(dependency, Chaos())
        await audit(who, f"chaos {dependency}", jsonable(old), jsonable(chaos), body.reason)
        return _control_json(after)

    return router


def _known_knob(knob: str) -> Any:
    try:
        return knob_spec(knob)
    except KnobError as exc:
        raise HTTPException(404, str(exc)) from None


def _observed(controller: Controller, state: ControlState, knob: str) -> Any:
    """What the knob was before a write: the published value, else what replicas report."""
    if knob in state.knobs:
        return state.knobs[knob]
    seen = {v.replica: v.knobs[knob] for v in controller.replicas.values() if knob in v.knobs}
    return seen or None


def _control_json(state: ControlState) -> dict[str, Any]:
    return {
        "version": state.version,
        "knobs": dict(state.knobs),
        "replicas": {r: dict(k) for r, k in state.replicas.items()},
        "pins": sorted(state.pins),
        "modes": sorted(m.value for m in state.modes),
        "chaos": jsonable(dict(state.chaos)),
        "autopilot": state.autopilot,
        "updated_at": state.updated_at,
        "updated_by": state.updated_by,
    }


def install_validation_handler(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": _validation_message(exc), "errors": jsonable(list(exc.errors()))},
            status_code=422,
        )
