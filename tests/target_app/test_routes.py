"""The demo service's routes over real HTTP: a real uvicorn server, a real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.jobs.streams import ANALYTICS_STREAM, EMAIL_STREAM
from tests.support.polling import eventually
from tests.target_app.conftest import API_KEY, SIGNUP, RunningTarget, StartTarget, applied

ORDER = {"item_id": 1, "quantity": 2}


# -- helpers ------------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def detail_locs(response: httpx.Response) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["detail"]]


@pytest.fixture
def target(start_target: StartTarget) -> RunningTarget:
    return start_target()


@pytest.fixture
def http(target: RunningTarget) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, timeout=5.0) as client:
        yield client


# -- client keys --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "not-a-key"}], ids=["missing", "unknown"])
def test_routes_with_client_data_need_a_known_key(
    target: RunningTarget, headers: dict[str, str]
) -> None:
    calls = [
        ("GET", "/feed", None),
        ("GET", "/items/1", None),
        ("POST", "/orders", ORDER),
        ("POST", "/signup", SIGNUP),
    ]
    for method, path, body in calls:
        # One client each: a second request on the same connection right after a 401
        # would be held by the penalty box (tested on its own in tests/surgeguard).
        with httpx.Client(base_url=target.url, timeout=5.0) as http:
            response = http.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.headers["WWW-Authenticate"] == "ApiKey"
        assert "X-Api-Key" in response.json()["detail"]
    assert target.service.dependencies["db"].calls == 0


def test_ping_health_readiness_and_metrics_need_no_key(http: httpx.Client) -> None:
    assert http.get("/ping").json() == {"pong": True}
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["ready"] is True
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert "surgeguard_requests_total" in metrics.text


def test_a_valid_key_gets_through(http: httpx.Client) -> None:
    assert http.get("/items/1", headers=API_KEY).status_code == 200
    assert http.post("/orders", json=ORDER, headers=API_KEY).status_code == 201


def test_no_request_takes_a_thread_hand_off(http: httpx.Client) -> None:
    # A plain ``def`` endpoint or dependency runs in the framework's thread pool: a
    # hand-off per request that cost a tenth of a busy replica's CPU. The pool starts
    # its threads lazily, so a request that used it leaves a new one behind.
    def pool_threads() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name == "AnyIO worker thread"}

    before = pool_threads()
    calls = [
        http.get("/items/1", headers=API_KEY),
        http.get("/feed", headers=API_KEY),
        http.get("/recommendations", headers=API_KEY),
        http.post("/orders", json=ORDER, headers=API_KEY),
        http.post("/analytics", json={"event": "page.view"}, headers=API_KEY),
        http.post("/signup", json=SIGNUP, headers=API_KEY),
        http.get("/items/1"),  # 401: the key check itself
    ]
    assert [r.status_code for r in calls] == [200, 200, 200, 201, 202, 202, 401]
    assert pool_threads() - before == set()


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/signup", {"email": "not-an-email", "name": "Ada"}, "email"),
        ("POST", "/signup", {"email": "ada@example.com"}, "name"),
        ("POST", "/orders", {"item_id": 1, "quantity": 0}, "quantity"),
        ("POST", "/orders", {"item_id": 1, "quantity": 101}, "quantity"),
        ("GET", "/items/0", None, "item_id"),
        ("GET", "/feed?page=0", None, "page"),
    ],
    ids=["bad-email", "missing-name", "quantity-0", "quantity-101", "item-0", "page-0"],
)
def test_bad_input_gets_422_naming_the_field(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    response = http.request(method, path, json=body, headers=API_KEY)
    assert response.status_code == 422, response.text
    assert any(field in loc for loc in detail_locs(response)), response.text


def test_a_body_that_is_not_json_gets_422(http: httpx.Client, redis_client: redis.Redis) -> None:
    response = http.post(
        "/signup",
        content=b"email=ada@example.com&name=Ada",
        headers={**API_KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert detail_locs(response)[0][0] == "body"
    assert redis_client.xlen(EMAIL_STREAM) == 0


# -- body size ------------------------------------------------------------------------------


def padded_signup(size: int) -> bytes:
    """A valid signup document of about ``size`` bytes (unknown fields are ignored)."""
    return b'{"email": "ada@example.com", "name": "Ada", "padding": "' + b"x" * size + b'"}'


def test_bodies_over_the_limit_get_413_and_store_nothing(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    target = start_target(max_body_bytes=200)
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        small = http.post(
            "/signup",
            content=padded_signup(20),
            headers={**API_KEY, "Content-Type": "application/json"},
        )
        assert small.status_code == 202, small.text  # the same document, under the limit
        stored = redis_client.xlen(EMAIL_STREAM)
        assert stored == 1

        declared = http.post(
            "/signup",
            content=padded_signup(400),
            headers={**API_KEY, "Content-Type": "application/json"},
        )
        assert declared.request.headers["Content-Length"] == str(len(padded_signup(400)))
        assert declared.status_code == 413
        assert "200 bytes" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:
            body = padded_signup(400)
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        chunked = http.post(
            "/signup", content=chunks(), headers={**API_KEY, "Content-Type": "application/json"}
        )
        assert chunked.request.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in chunked.request.headers
        assert chunked.status_code == 413
        assert chunked.json()["error"] == "payload_too_large"

    assert redis_client.xlen(EMAIL_STREAM) == stored
    assert redis_client.xlen(ANALYTICS_STREAM) == stored
    assert len(list(redis_client.scan_iter("surgeguard:signup:*"))) == stored


# -- signups --------------------------------------------------------------------------------


def test_signup_is_queued_durably_and_its_status_is_readable(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    response = http.post("/signup", json=SIGNUP, headers=API_KEY)
    assert response.status_code == 202
    body = response.json()
    signup_id = body["id"]
    assert body["status_url"] == f"/signups/{signup_id}"

    status = http.get(body["status_url"], headers=API_KEY)
    assert status.status_code == 200
    assert status.json() == {"id": signup_id, "status": "queued", "attempts": 0, "last_error": None}

    [(_, email_job)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(EMAIL_STREAM)
    )
    assert email_job[b"signup_id"] == signup_id.encode()
    assert email_job[b"email"] == b"ada@example.com"
    assert email_job[b"task"] == b"welcome_email"
    [(_, event)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(ANALYTICS_STREAM)
    )
    assert event[b"signup_id"] == signup_id.encode()
    assert event[b"event"] == b"signup"


def test_unknown_signup_is_404(http: httpx.Client) -> None:
    response = http.get("/signups/" + "0" * 32, headers=API_KEY)
    assert response.status_code == 404
    assert "0" * 32 in response.json()["detail"]


def test_signup_while_redis_is_down_is_503_and_works_again_after(
    start_target: StartTarget, tmp_path: Path
) -> None:
    own = EmbeddedRedis(data_dir=tmp_path / "redis")
    own.start()
    port = own.port
    try:
        target = start_target(redis_url=own.url)
        check = redis.Redis.from_url(own.url)
        try:
            with httpx.Client(base_url=target.url, timeout=5.0) as http:
                before = http.post("/signup", json=SIGNUP, headers=API_KEY)
                assert before.status_code == 202
                assert check.xlen(EMAIL_STREAM) == 1

                own.stop()
                down = http.post("/signup", json=SIGNUP, headers=API_KEY)
                assert down.status_code == 503, down.text
                assert down.headers["Retry-After"].isdigit()
                assert "id" not in down.json() and "status_url" not in down.json()
                assert down.json()["dependency"] == "redis"

                own = EmbeddedRedis(data_dir=tmp_path / "redis", port=port)
                own.start()
                # The 503 left nothing behind (the AOF kept only the first signup) ...
                assert check.xlen(EMAIL_STREAM) == 1
                # ... and signups work again without restarting the service.
                after = http.post("/signup", json=SIGNUP, headers=API_KEY)
                assert after.status_code == 202, after.text
                assert (
                    http.get(after.json()["status_url"], headers=API_KEY).json()["status"]
                    == "queued"
                )
                assert check.xlen(EMAIL_STREAM) == 2
        finally:
            check.close()
    finally:
        own.stop()


# -- items ----------------------------------------------------------------------------------


def test_items_are_json_and_404_past_the_catalogue(http: httpx.Client) -> None:
    response = http.get("/items/42", headers=API_KEY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["id"] == 42
    assert "X-Degraded" not in response.headers

    missing = http.get("/items/100001", headers=API_KEY)
    assert missing.status_code == 404
    assert "100001" in missing.json()["detail"]


def test_repeated_item_reads_are_served_from_the_cache(
    target: RunningTarget, http: httpx.Client
) -> None:
    db = target.service.dependencies["db"]
    first = http.get("/items/5", headers=API_KEY)
    assert first.status_code == 200
    calls = db.calls
    assert calls == 1
    for _ in range(5):
        again = http.get("/items/5", headers=API_KEY)
        assert again.status_code == 200
        assert again.content == first.content
    assert db.calls == calls


async def test_concurrent_misses_for_one_item_make_one_db_call(start_target: StartTarget) -> None:
    target = start_target(db_latency_ms=100)
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        responses = await asyncio.gather(
            *(client.get("/items/777", headers=API_KEY) for _ in range(30))
        )
    assert [r.status_code for r in responses] == [200] * 30
    assert len({r.content for r in responses}) == 1
    assert target.service.dependencies["db"].calls == 1


# -- bulkheads and degraded answers ----------------------------------------------------------


async def test_a_full_db_bulkhead_fails_fast_with_503_naming_db(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    # The served read holds the db's one slot for 1.5 s: long enough that the refusal
    # arrives while it is still held, on any machine.
    target = start_target(bulkhead_max_wait_ms=0, db_latency_ms=1500)
    async with httpx.AsyncClient(base_url=target.url, timeout=10.0) as client:
        state = await writer.set_knobs({"bulkhead.db": 1})
        await eventually(lambda: applied(client, state.version), what="bulkhead.db = 1")
        assert target.service.bulkheads["db"].limit == 1
        reads = [
            asyncio.create_task(client.get(path, headers=API_KEY))
            for path in ("/items/11", "/items/12")
        ]
        done, pending = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
        # The refusal did not wait for the db: it came while the other read held it.
        first = done.pop().result()
        still_held = target.service.bulkheads["db"].in_flight == 1 and len(pending) == 1
        served = (await asyncio.gather(*pending))[0] if pending else None
    assert first.status_code == 503, first.text
    assert still_held
    assert served is not None and served.status_code == 200
    refused = first
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json()["dependency"] == "db"
    assert "db" in refused.json()["detail"]


async def test_feed_without_recommendations_when_they_fail(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target()
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        healthy = await client.get("/feed", headers=API_KEY)
        assert healthy.status_code == 200
        assert healthy.json()["recommendations"]
        assert "X-Degraded" not in healthy.headers

        state = await writer.set_chaos("recommendations", Chaos(error_rate=1.0))
        await eventually(lambda: applied(client, state.version), what="chaos applied")
        degraded = await client.get("/feed", headers=API_KEY)
    assert degraded.status_code == 200
    assert "recommendations_unavailable" in degraded.headers["X-Degraded"]
    assert degraded.json()["recommendations"] == []
    assert degraded.json()["items"] == healthy.json()["items"]


async def test_feed_without_recommendations_when_their_bulkhead_is_full(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target(bulkhead_max_wait_ms=0, recommendations_latency_ms=300)
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        state = await writer.set_knobs({"bulkhead.recommendations": 1})
        await eventually(lambda: applied(client, state.version), what="bulkhead = 1")
        responses = await asyncio.gather(*(client.get("/feed", headers=API_KEY) for _ in range(3)))
    assert [r.status_code for r in responses] == [200] * 3
    degraded = [
        r for r in responses if "recommendations_unavailable" in r.headers.get("X-Degraded", "")
    ]
    complete = [r for r in responses if "X-Degraded" not in r.headers]
    assert len(complete) == 1 and complete[0].json()["recommendations"]
    assert len(degraded) == 2
    assert all(r.json()["recommendations"] == [] for r in degraded)


# -- metrics --------------------------------------------------------------------------------

CONTRACT_METRICS = (
    "surgeguard_request_duration_seconds",
    "surgeguard_queue_wait_seconds",
    "surgeguard_requests_total",
    "surgeguard_rejections_total",
    "surgeguard_inflight",
    "surgeguard_queue_depth",
    "surgeguard_concurrency_limit",
    "surgeguard_queue_limit",
    "surgeguard_dependency_inflight",
    "surgeguard_dependency_limit",
    "surgeguard_dependency_duration_seconds",
    "surgeguard_dependency_rejections_total",
    "surgeguard_mode_active",
    "surgeguard_jobs_pending",
    "surgeguard_event_loop_lag_seconds",
    "process_cpu_seconds_total",
)


def test_metrics_expose_every_contract_name(http: httpx.Client) -> None:
    assert http.get("/items/3", headers=API_KEY).status_code == 200
    assert http.get("/feed", headers=API_KEY).status_code == 200
    assert http.post("/signup", json=SIGNUP, headers=API_KEY).status_code == 202
    assert http.get("/ping").status_code == 200

    text = http.get("/metrics").text
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    missing = [name for name in CONTRACT_METRICS if name not in names]
    assert not missing, missing

    found = samples(text)
    assert any(
        name == "surgeguard_request_duration_seconds_bucket" and labels["le"] == "0.25"
        for name, labels, _ in found
    )
    items_ok = [
        v
        for name, labels, v in found
        if name == "surgeguard_requests_total"
        and labels["route"] == "items"
        and labels["outcome"] == "ok"
    ]
    assert sum(items_ok) == 1
    modes = {labels["mode"] for name, labels, _ in found if name == "surgeguard_mode_active"}
    assert modes == {"shed_sheddable", "recommendations_off", "serve_stale", "read_only"}
    streams = {labels["stream"] for name, labels, _ in found if name == "surgeguard_jobs_pending"}
    assert streams == {EMAIL_STREAM, ANALYTICS_STREAM}
    dependencies = {
        labels["dependency"] for name, labels, _ in found if name == "surgeguard_dependency_limit"
    }
    assert dependencies == {"db", "cache", "recommendations", "payments"}


def test_event_loop_lag_is_measured_on_the_replica_loop(
    target: RunningTarget, http: httpx.Client
) -> None:
    """The lag monitor runs on the service's own loop (started by its lifespan): a
    loop blocked for 300 ms makes the next wakeup at least 250 ms late."""

    def lag() -> tuple[float, float]:
        found = samples(http.get("/metrics").text)
        count = next(v for name, _, v in found if name == "surgeguard_event_loop_lag_seconds_count")
        within = next(
            v
            for name, labels, v in found
            if name == "surgeguard_event_loop_lag_seconds_bucket" and labels["le"] == "0.2"
        )
        return count, count - within

    async def block_the_loop() -> None:
        until = time.monotonic() + 0.3
        while time.monotonic() < until:  # CPU-bound: nothing else runs on this loop
            pass

    count, late = lag()
    target.server.call(block_the_loop())
    deadline = time.monotonic() + 5.0
    while lag()[1] <= late:  # the late wakeup is recorded as soon as the loop is free
        assert time.monotonic() < deadline, "no wakeup later than 200 ms was recorded"
        time.sleep(0.02)
    assert lag()[0] > count


def test_histograms_have_a_bucket_edge_at_a_custom_slo(start_target: StartTarget) -> None:
    target = start_target(slo_p99_ms=180)
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        assert http.get("/items/3", headers=API_KEY).status_code == 200
        found = samples(http.get("/metrics").text)
    for histogram in (
        "surgeguard_request_duration_seconds",
        "surgeguard_dependency_duration_seconds",
    ):
        edges = {labels["le"] for name, labels, _ in found if name == f"{histogram}_bucket"}
        assert "0.18" in edges, (histogram, sorted(edges))


def test_health_and_metrics_calls_are_not_counted_as_requests(http: httpx.Client) -> None:
    assert http.get("/ping").status_code == 200

    def counted() -> dict[tuple[str, str, str], float]:
        return {
            (labels["route"], labels["priority"], labels["outcome"]): value
            for name, labels, value in samples(http.get("/metrics").text)
            if name == "surgeguard_requests_total" and value
        }

    before = counted()
    assert before == {("ping", "normal", "ok"): 1.0}
    for _ in range(3):
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
    assert counted() == before


def test_the_health_port_answers_while_the_replicas_event_loop_is_blocked(
    start_target: StartTarget,
) -> None:
    """Issue 11: a probe must not wait behind a flooded loop. The loop is blocked for
    3 s; the health port answers (with the replica's own metrics) before it is free."""
    target = start_target(health_port=0)
    assert target.service.health is not None
    port = target.service.health.port
    blocked = threading.Event()

    async def block() -> None:
        blocked.set()
        time.sleep(3.0)  # noqa: ASYNC251 (blocking the whole loop is the point)
        blocked.clear()

    blocker = threading.Thread(target=target.server.call, args=(block(),))
    blocker.start()
    assert blocked.wait(10)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        health = probe.get("/healthz")
        metrics = probe.get("/metrics")
        answered_while_blocked = blocked.is_set()
    blocker.join(10)
    assert health.status_code == 200
    assert "surgeguard_concurrency_limit" in metrics.text
    assert answered_while_blocked
