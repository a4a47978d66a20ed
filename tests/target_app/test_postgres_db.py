"""Issue 15: the demo's db as a real PostgreSQL server (the embedded one), under real
replicas (uvicorn on ephemeral ports) and a real worker. Each test gets a database of
its own on one server for the module; the outage test has a server of its own."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from surgeguard import metric_names as names
from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.runtime.embedded_postgres import APP_ROLE, EmbeddedPostgres
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.db.schema import ensure_schema
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.target_app.conftest import API_KEY, RunningTarget, StartTarget
from tests.target_app.test_worker_processes import (
    FAST,
    Spawn,
    delivered,
    drained,
    spawn,
    wait_until,
)

__all__ = ["spawn"]  # the worker fixture, shared with the worker tests

_names = itertools.count()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir=tmp_path_factory.mktemp("pg"), pool_slots=60)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _in(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture
async def database(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database owned by the application role; its URL (the role's)."""
    name = f"t{next(_names)}"
    admin = await asyncpg.connect(postgres.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        yield _in(postgres.url, name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


async def _fetch(postgres: EmbeddedPostgres, url: str, sql: str) -> list[asyncpg.Record]:
    """``sql`` as the superuser (its reserved slots) in the database of ``url``."""
    conn = await asyncpg.connect(_in(postgres.admin_url, url.rsplit("/", 1)[1]))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_two_replicas_making_the_schema_at_once_both_succeed(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(2)]
    try:
        await asyncio.gather(*(ensure_schema(c, lanes=3, items=1000) for c in conns))
        assert await conns[0].fetchval("SELECT count(*) FROM items") == 1000
        assert await conns[0].fetchval("SELECT count(*) FROM surgeguard_lanes") == 3
        await ensure_schema(conns[1], lanes=2, items=1000)  # again: lanes follow capacity
        assert await conns[0].fetchval("SELECT max(id) FROM surgeguard_lanes") == 2
    finally:
        for conn in conns:
            await conn.close()


def test_signups_orders_and_reads_are_real_rows_and_the_email_goes_once(
    spawn: Spawn,
    start_target: StartTarget,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    postgres: EmbeddedPostgres,
    database: str,
) -> None:
    target = start_target(database_url=database, db_latency_ms=1)
    run = asyncio.run
    assert run(_fetch(postgres, database, "SELECT count(*) AS n FROM items"))[0]["n"] == 100_000
    run(_fetch(postgres, database, "UPDATE items SET name = 'from postgres' WHERE id IN (43, 41)"))
    with httpx.Client(base_url=target.url, headers=API_KEY, timeout=10.0) as http:
        signup = http.post("/signup", json={"email": "ada@example.com", "name": "Ada"})
        order = http.post("/orders", json={"item_id": 7, "quantity": 2})
        item = http.get("/items/43")
        feed = http.get("/feed", params={"page": 3})  # items 41..60
    assert signup.status_code == 202, signup.text
    assert order.status_code == 201, order.text
    assert item.json() == {"id": 43, "name": "from postgres", "price_cents": 143}
    assert feed.json()["items"][0] == {"id": 41, "name": "from postgres"}
    assert [i["id"] for i in feed.json()["items"]] == list(range(41, 61))
    signup_id = signup.json()["id"]
    rows = run(_fetch(postgres, database, "SELECT id, email, name FROM signups"))
    assert [tuple(r) for r in rows] == [(signup_id, "ada@example.com", "Ada")]
    rows = run(_fetch(postgres, database, "SELECT id, item_id, quantity FROM orders"))
    assert [tuple(r) for r in rows] == [(order.json()["order_id"], 7, 2)]
    spawn("pg-once", redis_server.url, mailer_latency_ms=0, **FAST)
    wait_until(drained(redis_client, [signup_id]), "the signup's jobs done")
    assert delivered(redis_client) == {signup_id: 1}


async def _lane_holders(postgres: EmbeddedPostgres, url: str) -> tuple[int, int]:
    """(calls doing their work in a lane now, calls waiting for a lane) inside Postgres."""
    rows = await _fetch(
        postgres,
        url,
        "SELECT count(*) FILTER (WHERE wait_event = 'PgSleep') AS working, "
        "count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting "
        "FROM pg_stat_activity WHERE datname = current_database() AND backend_type = "
        "'client backend' AND pid <> pg_backend_pid()",
    )
    return rows[0]["working"], rows[0]["waiting"]


async def _set_bulkhead_db(writer: ControlPlaneWriter, target: RunningTarget, value: int) -> None:
    """This replica's own bulkhead.db (a budgeted knob would ignore a global value)."""
    await writer.set_knobs({"bulkhead.db": value}, replica=target.service.replica)

    async def applied() -> bool:
        return target.service.bulkheads["db"].limit == value

    await eventually(applied, timeout_s=5, what=f"bulkhead.db = {value}")


async def test_two_replicas_share_the_db_capacity(
    start_target: StartTarget, writer: ControlPlaneWriter, postgres: EmbeddedPostgres, database: str
) -> None:
    """Capacity 2, 50 ms a call: 2 replicas x 8 concurrent reads are served as 2 at a
    time inside Postgres (never more working at once), so no faster than 16 x 50 / 2 ms."""
    replicas = [
        start_target(database_url=database, db_capacity=2, db_latency_ms=50) for _ in range(2)
    ]
    for replica in replicas:
        await _set_bulkhead_db(writer, replica, 16)  # room for all 8: the db is the limit
    seen = {"working": 0, "waiting": 0}
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            working, waiting = await _lane_holders(postgres, database)
            seen["working"] = max(seen["working"], working)
            seen["waiting"] = max(seen["waiting"], waiting)

    async def reads(url: str, first: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers=API_KEY, timeout=10.0) as http:
            answers = await asyncio.gather(*(http.get(f"/items/{first + i}") for i in range(8)))
        return [a.status_code for a in answers]

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    codes = await asyncio.gather(*(reads(r.url, 1000 + 100 * n) for n, r in enumerate(replicas)))
    elapsed = time.monotonic() - started
    stop.set()
    await watcher
    assert codes == [[200] * 8, [200] * 8]
    assert 1 <= seen["working"] <= 2  # never more than the capacity at work, both replicas
    assert seen["waiting"] >= 1  # the rest queued inside Postgres, not in a replica
    assert elapsed >= 16 * 0.050 / 2  # the throughput of capacity 2, not of 4


async def _replica_connections(postgres: EmbeddedPostgres, url: str, replica: str) -> int:
    rows = await _fetch(
        postgres,
        url,
        f"SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = "
        f"'surgeguard {replica}' AND datname = current_database()",
    )
    return int(rows[0]["n"])


async def test_the_pool_never_holds_more_connections_than_the_bulkhead_allows(
    start_target: StartTarget,
    writer: ControlPlaneWriter,
    postgres: EmbeddedPostgres,
    database: str,
) -> None:
    target = start_target(database_url=database, db_capacity=6, db_latency_ms=300)
    replica = target.service.replica
    await _set_bulkhead_db(writer, target, 8)
    async with httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=10.0) as http:
        calls = [asyncio.ensure_future(http.get(f"/items/{2000 + i}")) for i in range(6)]

        async def open_now(expected: int) -> bool:
            return await _replica_connections(postgres, database, replica) == expected

        await eventually(
            lambda: open_now(6),
            timeout_s=10,
            what="6 connections open for 6 calls",
        )
        # The limit falls while the 6 are in flight: they finish, the surplus goes.
        await writer.set_knobs({"bulkhead.db": 2}, replica=replica)
        answers = await asyncio.gather(*calls)
        assert [a.status_code for a in answers] == [200] * 6
        await eventually(
            lambda: open_now(2),
            timeout_s=10,
            what="the pool down to the new limit of 2",
        )
        assert target.service.bulkheads["db"].limit == 2
        # And it stays there under load: 6 more reads, never more than 2 connections.
        more = [asyncio.ensure_future(http.get(f"/items/{3000 + i}")) for i in range(6)]
        while not all(c.done() for c in more):
            assert await _replica_connections(postgres, database, replica) <= 2
        assert {a.result().status_code for a in more} <= {200, 503}


async def test_db_chaos_slows_and_fails_postgres_calls(
    start_target: StartTarget, writer: ControlPlaneWriter, postgres: EmbeddedPostgres, database: str
) -> None:
    target = start_target(database_url=database, db_latency_ms=50)
    async with httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=10.0) as http:

        async def chaos(**settings: float) -> None:
            state = await writer.set_chaos("db", Chaos(**settings))
            await eventually(lambda: _applied(http, state.version), timeout_s=5, what="chaos")

        await chaos(latency_multiplier=6.0)
        started = time.monotonic()
        assert (await http.get("/items/11")).status_code == 200
        assert time.monotonic() - started >= 0.3  # 50 ms x 6 inside Postgres
        await chaos(error_rate=1.0)
        failed = await http.get("/items/12")
        assert failed.status_code == 503
        assert failed.json()["dependency"] == "db"
        assert "simulated failure" in failed.json()["detail"]
        # Slower than the bulkhead's timeout (2 s): cut off, a 503 naming db, not a hang;
        # and the server drops the work of the call it cut (its lane is free again).
        await chaos(latency_multiplier=100.0)
        cut = await http.get("/items/13")
        assert cut.status_code == 503 and cut.json()["dependency"] == "db", cut.text
        assert "timeout" in cut.json()["detail"]

        async def lanes_free() -> bool:
            return (await _lane_holders(postgres, database))[0] == 0

        await eventually(lanes_free, timeout_s=5, what="the cut call's lane released")
        await chaos()
        assert (await http.get("/items/14")).status_code == 200
    # The db's dependency metrics (the bulkhead's) count these Postgres calls.
    value = target.service.registry.get_sample_value
    duration = f"{names.DEPENDENCY_DURATION_SECONDS}_count"
    assert value(duration, {"dependency": "db", "outcome": "ok"}) == 2
    assert value(duration, {"dependency": "db", "outcome": "error"}) == 1
    assert value(duration, {"dependency": "db", "outcome": "timeout"}) == 1


async def _applied(http: httpx.AsyncClient, version: int) -> bool:
    ready = (await http.get("/readyz")).json()
    return bool(ready["control_plane"]["version"] >= version)


async def test_postgres_absent_or_down_is_a_503_naming_db_and_it_comes_back(
    start_target: StartTarget, tmp_path: Path
) -> None:
    server = EmbeddedPostgres(data_dir=tmp_path / "pg", pool_slots=3, port=free_port())
    try:
        # The replica comes up before its db (compose may start them so): 503s naming db
        # at once, not a hang, until the db is there.
        target = start_target(database_url=server.url, db_latency_ms=1)
        async with httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=10.0) as http:
            early = await http.get("/items/4")
            assert early.status_code == 503 and early.json()["dependency"] == "db", early.text
            server.start()

            async def serving(path: str) -> bool:
                return (await http.get(path)).status_code == 200

            await eventually(lambda: serving("/items/5"), timeout_s=10, what="the db's schema")
            # Every pool slot taken elsewhere: Postgres says too many connections.
            await asyncio.to_thread(target.server.call, target.service.db.close())  # idle ones
            held = [await asyncpg.connect(server.url) for _ in range(3)]
            try:
                busy = await http.get("/items/6")
            finally:
                for conn in held:
                    await conn.close()
            assert busy.status_code == 503, busy.text
            assert busy.json()["dependency"] == "db" and "too many" in busy.json()["detail"]
            port = server.port
            server.stop()
            for path in ("/items/7", "/feed"):
                down = await http.get(path)
                assert down.status_code == 503, down.text
                assert down.json()["dependency"] == "db"
                assert down.headers["Retry-After"]
            down = await http.post("/orders", json={"item_id": 1, "quantity": 1})
            assert down.status_code == 503 and down.json()["dependency"] == "db"
            server = EmbeddedPostgres(data_dir=tmp_path / "pg", pool_slots=3, port=port)
            server.start()

            await eventually(lambda: serving("/items/8"), timeout_s=10, what="served again")
    finally:
        server.stop()
