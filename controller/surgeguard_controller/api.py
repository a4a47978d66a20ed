"""The controller's HTTP API under ``/api/v1``: the one door for operator writes.

Reads are open. Writes need an operator's bearer token (``Authorization: Bearer
<token>``, checked by ``surgeguard_controller.operators.WriteDoor`` before the body is
read; bodies are limited to ``BODY_LIMIT`` bytes), are validated whole before anything
changes (404 for an unknown knob, mode or dependency; 422 naming the field and its
range; true, "41" and 40.0 are not a knob value), become one new version of the
control document, and are audited in the same transaction: what, old -> new, when,
who (the operator's name), and why.
The writes themselves are plain functions (``surgeguard_controller.operator_writes``);
these routes check the token and translate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, Field, StrictBool, StrictFloat, StrictInt
from redis.exceptions import RedisError

from surgeguard.chaos import LATENCY_MULTIPLIER_RANGE
from surgeguard.controlplane import ControlDocumentError, ControlState, NotHolder, read_state
from surgeguard_controller import operator_writes as writes
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.health import error_text
from surgeguard_controller.loop import Controller
from surgeguard_controller.operators import OPERATOR_STATE
from surgeguard_controller.records import jsonable
from surgeguard_controller.sensing.discovery import sd_groups


def _unicode(text: str) -> str:
    """JSON may carry a lone surrogate ("\ud800"), which is no text: refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone surrogate is not)") from None
    return text


Reason = Annotated[str, Field(min_length=1, max_length=writes.REASON_MAX), AfterValidator(_unicode)]
LOW, HIGH = LATENCY_MULTIPLIER_RANGE


# Strict types: true, "41" and 40.0 are not a knob value (a bool is an int to Python:
# true pinned a limit at 1), and 1 is not a switch.


class ModeIn(BaseModel):
    active: StrictBool
    reason: Reason


class KnobIn(BaseModel):
    value: StrictInt | None = None
    pin: StrictBool | None = None
    reason: Reason


class AutopilotIn(BaseModel):
    enabled: StrictBool
    reason: Reason


class ChaosIn(BaseModel):
    latency_multiplier: StrictFloat = Field(1.0, ge=LOW, le=HIGH)
    error_rate: StrictFloat = Field(0.0, ge=0.0, le=1.0)
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


def operator(request: Request) -> str:
    """Who is writing: the operator's name, put there by the ``WriteDoor`` once their
    bearer token checked out (before the body was read); else 401."""
    name = getattr(request.state, OPERATOR_STATE, None)
    if not isinstance(name, str):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


Operator = Annotated[str, Depends(operator)]


def desk_of(controller: Controller) -> writes.Desk:
    """Where the controller's operator writes go (its Redis, writer and records)."""
    return writes.Desk(controller.redis, controller.writer, controller.store, controller.wall)


def build_api(controller: Controller) -> APIRouter:
    """Routes; the app that includes them puts a ``WriteDoor`` in front. A write's
    route only translates: the body into a call of ``operator_writes`` with what the
    replicas declare, a ``WriteError`` into its status (404 unknown, 422 invalid)."""
    router = APIRouter(prefix="/api/v1")
    desk = desk_of(controller)

    async def declared(**name: str) -> Catalogue:
        """What the replicas declare, read again first when ``name`` is not in it."""
        await controller.learn_if_unknown(**name)
        return controller.catalogue

    @router.get("/state")
    async def state() -> dict[str, Any]:
        """Answers while Redis is down or its document is invalid: ``control`` is then
        the last good document, with ``control_stale`` and ``control_error`` set."""
        stale: dict[str, Any] = {}
        try:
            control = await read_state(controller.redis)
        except (RedisError, OSError, ControlDocumentError) as exc:
            control = controller.known
            stale = {"control_stale": True, "control_error": error_text(exc)}
        return {**state_json(controller, control), **controller.state_json(), **stale}

    @router.get("/targets")
    async def targets() -> list[dict[str, Any]]:
        """The replicas the controller tunes, as Prometheus ``http_sd_configs`` reads
        them (``[{"targets": ["host:port", ...], "labels": {"job": ...}}]``)."""
        return sd_groups(controller.source.targets)

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
        catalogue = await declared(mode=mode)
        return await _answer(
            writes.set_mode(desk, catalogue, mode, body.active, who=who, reason=body.reason)
        )

    @router.put("/knobs/{knob}")
    async def set_knob(knob: str, body: KnobIn, who: Operator) -> dict[str, Any]:
        catalogue = await declared(knob=knob)
        reported = {v.replica: v.knobs for v in controller.replicas.values()}
        return await _answer(
            writes.set_knob(
                desk,
                catalogue,
                knob,
                value=body.value,
                pin=body.pin,
                who=who,
                reason=body.reason,
                reported=reported,
            )
        )

    @router.delete("/knobs/{knob}/pin")
    async def unpin(
        knob: str,
        who: Operator,
        reason: Annotated[str, Query(min_length=1, max_length=writes.REASON_MAX)] = "unpinned",
    ) -> dict[str, Any]:
        catalogue = await declared(knob=knob)
        return await _answer(writes.unpin(desk, catalogue, knob, who=who, reason=reason))

    @router.put("/autopilot")
    async def set_autopilot(body: AutopilotIn, who: Operator) -> dict[str, Any]:
        return await _answer(writes.set_autopilot(desk, body.enabled, who=who, reason=body.reason))

    @router.put("/chaos/{dependency}")
    async def set_chaos(
        dependency: Annotated[str, Path()], body: ChaosIn, who: Operator
    ) -> dict[str, Any]:
        catalogue = await declared(dependency=dependency)
        write = writes.set_chaos(
            desk,
            catalogue,
            dependency,
            latency_multiplier=body.latency_multiplier,
            error_rate=body.error_rate,
            who=who,
            reason=body.reason,
        )
        return await _answer(write)

    return router


async def _answer(write: Awaitable[ControlState]) -> dict[str, Any]:
    """The control document after ``write``; its ``WriteError`` as an HTTP error."""
    try:
        return _control_json(await write)
    except writes.WriteError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except NotHolder as exc:  # another controller writes: send the write there
        raise HTTPException(409, f"{exc}: write through that controller") from None


def state_json(controller: Controller, control: ControlState) -> dict[str, Any]:
    """``GET /state``: the controller's view, the control document, and what the
    replicas declare."""
    catalogue = controller.catalogue
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
        # What the replicas declare: the knobs, the range the controller moves
        # each in, the dependencies and the modes (the dashboard lists these).
        "bounds": {k: list(controller.config.bounds_of(k)) for k in catalogue.knob_specs},
        "knob_specs": {
            k: {
                "minimum": spec.minimum,
                "maximum": spec.maximum,
                "default": spec.default,
                "unit": spec.unit,
                "description": spec.description,
            }
            for k, spec in catalogue.knob_specs.items()
        },
        "dependencies": list(catalogue.dependencies),
        "modes_available": {m.name: m.description for m in catalogue.modes.values()},
        "modes_declared": {
            m.name: {"door": m.door, "auto_degrade": m.auto_degrade}
            for m in catalogue.modes.values()
        },
    }


def _control_json(state: ControlState) -> dict[str, Any]:
    return {
        "version": state.version,
        "knobs": dict(state.knobs),
        "replicas": {r: dict(k) for r, k in state.replicas.items()},
        "pins": sorted(state.pins),
        "modes": sorted(state.modes),
        "chaos": jsonable(dict(state.chaos)),
        "autopilot": state.autopilot,
        "updated_at": state.updated_at,
        "updated_by": state.updated_by,
        "epoch": state.epoch,
        "restored_from": list(state.restored_from) if state.restored_from else None,
    }


def install_error_handlers(app: FastAPI) -> None:
    """422 naming the bad field; 503 naming Redis when it cannot answer a read or a
    write (down, restarting, or holding the wrong type at a key), never a bare 500."""

    @app.exception_handler(RedisError)
    async def _redis_down(_: Request, exc: RedisError) -> Response:
        return JSONResponse(
            {"detail": f"Redis cannot answer: {error_text(exc)}"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        # ASCII JSON: the errors echo the input, which may hold what UTF-8 cannot
        # (a lone surrogate); escaped, any input can be said back.
        body = {"detail": _validation_message(exc), "errors": jsonable(list(exc.errors()))}
        return Response(
            json.dumps(body, ensure_ascii=True, default=str),
            status_code=422,
            media_type="application/json",
        )
