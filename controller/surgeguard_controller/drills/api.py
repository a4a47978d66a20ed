"""The drills API under ``/api/v1/drills``: run a load-test scenario through the
controller, stop it, and let runs started elsewhere mark their start and end.

Reads are open; writes need the admin token (``surgeguard_controller.api.Operator``), are
checked whole before anything happens and are audited like every other write.

- ``GET  /drills?limit=20`` -> ``{"scenarios": {name: {users, duration_s}},
  "current": record | null, "recent": [record, ...]}`` (newest first)
- ``POST /drills`` ``{scenario, users?, duration_s?, reason}`` -> 202 record;
  404 unknown scenario, 422 users outside [1, 10000] or duration_s outside
  [5, 3600] s, 409 while a drill runs
- ``POST /drills/stop`` ``{reason}`` -> 200 the final record; 409 when none runs
- ``POST /drills/marks`` ``{event: "start"|"end", id?, scenario, users?, duration_s?,
  reason?}`` -> 201 (start) / 200 (end) the external record; 404 unknown scenario or
  no open run to end
- ``PUT /drills/{id}/chaos/{dependency}`` ``{latency_multiplier, error_rate, reason}``
  -> 200 the drill's record: chaos set by the running controller drill ``id`` (its load
  generator calls it), which the controller puts back whatever ends the drill; 409
  when that drill is not running, else as ``PUT /chaos/{dependency}``
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from surgeguard_controller import operator_writes as writes
from surgeguard_controller.api import ChaosIn, Operator, Reason, desk_of
from surgeguard_controller.drills.drill import (
    Drill,
    DrillError,
    Scenarios,
    check,
    external_end,
    external_start,
    find_open_external,
    known_scenario,
    scenario_defaults,
    settle,
)
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller

DrillId = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9._:-]+$")]


class DrillIn(BaseModel):
    scenario: str = Field(min_length=1, max_length=64)
    users: int | None = None  # checked by drill.check: the message names the range
    duration_s: float | None = None
    reason: Reason


class StopIn(BaseModel):
    reason: Reason


class MarkIn(BaseModel):
    event: Literal["start", "end"]
    id: DrillId | None = None
    scenario: str = Field(min_length=1, max_length=64)
    users: int | None = None
    duration_s: float | None = None
    reason: str = Field("", max_length=200)


def _fail(exc: DrillError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


def build_drills_api(
    controller: Controller, runner: DrillRunner, scenarios: Scenarios
) -> APIRouter:
    """The drills' routes; ``scenarios``: what a drill may run (handed in)."""
    router = APIRouter(prefix="/api/v1/drills")
    desk = desk_of(controller)

    async def audit(who: str, what: str, old: Any, new: Any, reason: str) -> None:
        await writes.audit(desk, who=who, what=what, old=old, new=new, reason=reason)

    def _json(drill: Drill | None) -> dict[str, Any] | None:
        return None if drill is None else settle(drill, controller.wall()).to_json()

    @router.get("")
    async def drills(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
        recent = [settle(d, controller.wall()) for d in await runner.store.recent(limit)]
        current = runner.current
        if current is None:  # else the newest external run still going, if any
            current = next((d for d in recent if d.source == "external" and d.running), None)
        return {
            "scenarios": scenario_defaults(scenarios),
            "current": _json(current),
            "recent": [d.to_json() for d in recent],
        }

    @router.post("", status_code=202)
    async def start(body: DrillIn, who: Operator, request: Request) -> dict[str, Any]:
        try:
            spec = check(body.scenario, body.users, body.duration_s, scenarios=scenarios)
            drill = await runner.start(
                spec, who=who, reason=body.reason, controller_url=str(request.base_url)
            )
        except DrillError as exc:
            raise _fail(exc) from None
        new = {"id": drill.id, "users": drill.users, "duration_s": drill.duration_s}
        await audit(who, f"drill {drill.scenario}", None, new, body.reason)
        return drill.to_json()

    @router.post("/stop")
    async def stop(body: StopIn, who: Operator) -> dict[str, Any]:
        try:
            drill = await runner.stop(who=who, reason=body.reason)
        except DrillError as exc:
            raise _fail(exc) from None
        await audit(who, f"drill {drill.scenario}", "running", drill.status, body.reason)
        return drill.to_json()

    @router.post("/marks")
    async def mark(body: MarkIn, who: Operator) -> JSONResponse:
        try:
            if body.event == "start":
                drill = await _mark_start(runner, scenarios, body, who, controller.wall())
            else:
                drill = await _mark_end(runner, scenarios, body, controller.wall())
        except DrillError as exc:
            raise _fail(exc) from None
        what = f"drill {drill.scenario} ({drill.source})"
        await audit(who, what, None, {"event": body.event, "id": drill.id}, body.reason or "mark")
        return JSONResponse(drill.to_json(), status_code=201 if body.event == "start" else 200)

    @router.put("/{drill_id}/chaos/{dependency}")
    async def drill_chaos(
        drill_id: DrillId, dependency: str, body: ChaosIn, who: Operator
    ) -> dict[str, Any]:
        await controller.learn_if_unknown(dependency=dependency)
        try:
            drill = await runner.set_chaos(
                drill_id,
                controller.catalogue,
                dependency,
                latency_multiplier=body.latency_multiplier,
                error_rate=body.error_rate,
                who=who,
                reason=body.reason,
            )
        except DrillError as exc:
            raise _fail(exc) from None
        except writes.WriteError as exc:
            raise HTTPException(exc.status, exc.message) from None
        return drill.to_json()

    return router


async def _mark_start(
    runner: DrillRunner, scenarios: Scenarios, body: MarkIn, who: str, now: float
) -> Drill:
    if body.users is not None or body.duration_s is not None:
        # The same ranges as a drill's.
        check(body.scenario, body.users, body.duration_s, scenarios=scenarios)
    drill_id = body.id or f"ext-{secrets.token_hex(4)}"
    if await runner.store.get(drill_id) is not None:
        raise DrillError(f"a drill with id {drill_id!r} is already recorded", 409)
    drill = external_start(
        drill_id,
        body.scenario,
        users=body.users,
        duration_s=body.duration_s,
        who=who,
        reason=body.reason,
        at=now,
        scenarios=scenarios,
    )
    await runner.store.add(drill)
    return drill


async def _mark_end(runner: DrillRunner, scenarios: Scenarios, body: MarkIn, now: float) -> Drill:
    known_scenario(body.scenario, scenarios)  # 404 for an unknown scenario
    recent = await runner.store.recent()
    if body.id is not None:
        found = next((d for d in recent if d.id == body.id), None)
    else:
        found = find_open_external(recent, body.scenario)
    if found is None:
        which = f"with id {body.id!r}" if body.id else f"of scenario {body.scenario!r}"
        raise DrillError(f"no running external drill {which} to end", 404)
    drill = external_end(found, at=now)
    await runner.store.update(drill)
    return drill
