"""The routes: a thin request path (validate, authorize, do the minimum, return).

Dependency trouble never hangs a request: a full or slow bulkhead, or a failing
dependency, becomes a degraded answer (``X-Degraded``) where the route can do
without it, else a ``503`` with ``Retry-After`` naming the dependency.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator
from redis.exceptions import RedisError

from surgeguard.bulkhead import BulkheadRejected
from surgeguard_target_app.db.model import ITEM_COUNT
from surgeguard_target_app.declaration import RECOMMENDATIONS_OFF, SERVE_STALE
from surgeguard_target_app.dependencies import DependencyError
from surgeguard_target_app.jobs.streams import (
    ANALYTICS_STREAM,
    Retention,
    signup_status,
    store_signup,
)

if TYPE_CHECKING:
    from surgeguard_target_app.service import Service

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s.]{2,63}$")
RETRY_AFTER_S = "1"
# Printable ASCII, no spaces (a UUID, a ULID, any token a client makes up).
IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x21-\x7e]+$",
    description="the same key within the window returns the same signup (one email)",
)


class SignupIn(BaseModel):
    email: str = Field(max_length=254)
    name: str = Field(min_length=1, max_length=100)

    @field_validator("email")
    @classmethod
    def _looks_like_email(cls, value: str) -> str:
        if not EMAIL.match(value):
            raise ValueError("email must look like name@example.com")
        return value


class OrderIn(BaseModel):
    item_id: int = Field(ge=1, le=ITEM_COUNT)
    quantity: int = Field(ge=1, le=100)


class AnalyticsIn(BaseModel):
    event: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.:-]+$")


async def client_key(
    request: Request, x_api_key: Annotated[str | None, Header()] = None
) -> str:
    """The caller's client key; 401 when it is missing or unknown."""
    # async although it awaits nothing: FastAPI runs a plain ``def`` dependency in its
    # thread pool, a thread hand-off per request (a tenth of the replica's CPU in a
    # 10,000-user hold, by profile).
    # The door already turned these away (401 before any slot); this is for a replica
    # run with admission off (cost measurement), which must still not serve strangers.
    keys = request.app.state.service.client_keys
    if keys is not None and (x_api_key is None or x_api_key not in keys):
        raise HTTPException(
            401,
            "missing or unknown client key in X-Api-Key",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return x_api_key or ""  # "": no key is asked for


Client = Annotated[str, Depends(client_key)]


def _unavailable(what: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"error": "unavailable", "dependency": what, "detail": detail},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def add_routes(api: FastAPI, service: Service) -> None:
    """The demo's routes and error answers, on the service's FastAPI app."""
    api.state.service = service
    bulkheads = service.bulkheads

    async def recommend(client: str, limit: int) -> list[int]:
        """Recommendations for the caller (in process or the remote API), in the bulkhead."""
        recommender = service.callers.recommender
        return await bulkheads["recommendations"].call(
            lambda: recommender.recommend(_user_id(client), limit)
        )

    @api.exception_handler(BulkheadRejected)
    async def _bulkhead(_: Request, exc: BulkheadRejected) -> JSONResponse:
        return _unavailable(exc.dependency, f"{exc.dependency} is saturated ({exc.reason}): {exc}")

    @api.exception_handler(DependencyError)
    async def _dependency(_: Request, exc: DependencyError) -> JSONResponse:
        return _unavailable(exc.name, str(exc))

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422, made writable: it echoes the input, and one JSON cannot
        # carry (a lone surrogate "\ud800", a number like 1e400) made it a 500.
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, 422)

    @api.exception_handler(RedisError)
    async def _redis(request: Request, exc: RedisError) -> JSONResponse:
        if request.url.path != "/signup":
            return _unavailable("redis", "the job store is unreachable")
        # Not "nothing was stored": a write can land after its reply was lost. A retry
        # with the same Idempotency-Key is safe either way.
        return _unavailable(
            "redis",
            "the job store is unreachable; the signup may or may not have been stored: "
            "retry with the same Idempotency-Key",
        )

    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        watcher = service.watcher
        body = {
            "ready": service.ready,
            "replica": service.replica,
            "control_plane": {
                "version": watcher.applied_version,
                "staleness_s": round(watcher.staleness_s, 3),
                "last_error": watcher.last_error or None,
            },
            "knobs": dict(service.knobs),
            "modes": sorted(service.modes),
        }
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    @router.get("/items/{item_id}")
    async def item(item_id: Annotated[int, Path(ge=1)], _: Client) -> Response:
        if item_id > ITEM_COUNT:
            raise HTTPException(404, f"no item {item_id} (items are 1..{ITEM_COUNT})")

        async def load() -> bytes:
            row = await service.db.item(item_id)
            if row is None:
                raise HTTPException(404, f"no item {item_id} in the db")
            return json.dumps(row).encode()

        result = await service.cache.get(
            f"item:{item_id}", load, allow_stale=SERVE_STALE in service.modes
        )
        return _json(result.value, _cache_degraded(result.stale, result.cache_available))

    @router.get("/feed")
    async def feed(client: Client, page: Annotated[int, Query(ge=1, le=100)] = 1) -> Response:
        async def load() -> bytes:
            return json.dumps(await service.db.feed(page)).encode()

        result = await service.cache.get(
            f"feed:{page}", load, allow_stale=SERVE_STALE in service.modes
        )
        degraded = _cache_degraded(result.stale, result.cache_available)
        recommendations: list[int] = []
        if RECOMMENDATIONS_OFF in service.modes:
            degraded.append(RECOMMENDATIONS_OFF)
        else:
            try:
                recommendations = await recommend(client, 2)
            except (BulkheadRejected, DependencyError):
                degraded.append("recommendations_unavailable")
        body = b'{"page":%d,"items":%s,"recommendations":%s}' % (
            page,
            result.value,
            json.dumps(recommendations).encode(),
        )
        return _json(body, degraded)

    @router.get("/recommendations")
    async def recommendations(client: Client) -> dict[str, list[int]]:
        return {"items": await recommend(client, 5)}

    @router.post("/orders", status_code=201)
    async def orders(order: OrderIn, _: Client) -> dict[str, Any]:
        order_id = uuid.uuid4().hex
        await service.db.add_order(order_id, order.item_id, order.quantity)
        amount_cents = _price_cents(order.item_id) * order.quantity
        charge_id = await bulkheads["payments"].call(
            lambda: service.callers.payments.charge(order_id, amount_cents)
        )
        return {
            "order_id": order_id,
            "charge_id": charge_id,
            "item_id": order.item_id,
            "quantity": order.quantity,
            "status": "confirmed",
        }

    retention = Retention(
        signup_ttl_s=service.settings.signup_ttl_s,
        idempotency_window_s=service.settings.idempotency_window_s,
        analytics_maxlen=service.settings.analytics_maxlen,
    )

    @router.post("/signup", status_code=202)
    async def signup(
        body: SignupIn,
        client: Client,
        response: Response,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> dict[str, str]:
        stored = await store_signup(
            service.redis,
            body.email,
            body.name,
            idempotency_key=idempotency_key,
            client_key=client,
            retention=retention,
        )
        if stored.conflict:
            raise HTTPException(
                422,
                "Idempotency-Key was already used for a different signup (another email "
                "or name); use a new key for a new signup",
            )
        # The row, by the id Redis chose (idempotent: a replay lands it once). After
        # the job store: that decides the id; a db failure here is a 503 and a retry
        # with the same Idempotency-Key completes it without a second email.
        await service.db.add_signup(stored.id, body.email, body.name)
        if stored.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        # Stored all the same (202), but the email will be late: say so, from the
        # last backlog sample (no extra Redis call on the request path).
        if service.jobs_backlog > service.settings.job_backlog_limit:
            response.headers["X-Degraded"] = "jobs_backlog"
        return {"id": stored.id, "status_url": f"/signups/{stored.id}"}

    @router.get("/signups/{signup_id}")
    async def signup_state(
        signup_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], _: Client
    ) -> dict[str, Any]:
        status = await signup_status(service.redis, signup_id)
        if status is None:
            raise HTTPException(404, f"no signup {signup_id}")
        return {
            "id": status.id,
            "status": status.status,
            "attempts": status.attempts,
            "last_error": status.last_error,
        }

    @router.post("/analytics", status_code=202)
    async def analytics(body: AnalyticsIn, _: Client) -> dict[str, str]:
        key = uuid.uuid4().hex
        entry = await service.redis.xadd(
            ANALYTICS_STREAM,
            {"task": "analytics", "event": body.event, "idempotency_key": f"analytics:{key}"},
            maxlen=retention.analytics_maxlen,
            approximate=True,
        )
        return {"id": entry.decode() if isinstance(entry, bytes) else str(entry)}

    api.include_router(router)


def _json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry as text: a string's lone surrogates escaped
    (``"\\ud800"``), an infinite or NaN number as ``"inf"`` or ``"nan"``."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _price_cents(item_id: int) -> int:
    return 100 + item_id % 9_900


def _user_id(client_key: str) -> int:
    """The demo has no users: each client key stands for one (1..1_000_000)."""
    return zlib.crc32(client_key.encode()) % 1_000_000 + 1


def _cache_degraded(stale: bool, cache_available: bool) -> list[str]:
    degraded = []
    if stale:
        degraded.append(SERVE_STALE)
    if not cache_available:
        degraded.append("cache_unavailable")
    return degraded


def _json(body: bytes, degraded: list[str]) -> Response:
    headers = {"X-Degraded": ",".join(degraded)} if degraded else None
    return Response(body, media_type="application/json", headers=headers)
