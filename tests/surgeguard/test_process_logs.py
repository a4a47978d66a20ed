"""A real ``surgeguard target`` process's log (issue 16): JSON lines that parse and carry
their level, one line per change of what the replica enforces (not one per document),
and ``--log-level warning`` hiding the INFO lines. Real Redis (the embedded one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from surgeguard.controlplane import CONTROL_KEY, ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import eventually
from tests.support.processes import clean_env, free_port, running

pytestmark = pytest.mark.usefixtures("redis_client")  # a flushed Redis: no document yet


def _target(redis_server: EmbeddedRedis, log: Path, *flags: str) -> tuple[Any, str]:
    port = free_port()
    env = clean_env(
        SURGEGUARD_REDIS_URL=redis_server.url,
        SURGEGUARD_REPLICA_ID="r1",
        SURGEGUARD_CONTROL_POLL_MS="100",
        SURGEGUARD_CONCURRENCY_LIMIT="64",
    )
    url = f"http://127.0.0.1:{port}"
    args = ["target", "--port", str(port), *flags]
    return running(args, env, f"{url}/healthz", log=log), url


def _records(log: Path) -> list[dict[str, Any]]:
    """The log's JSON lines (the process also prints a plain line or two on start)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


async def _applied(url: str, version: int) -> None:
    async def check() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as client:
            ready = (await client.get(f"{url}/readyz")).json()
        return bool(ready["control_plane"]["version"] == version)

    await eventually(check, 10.0, f"control version {version} applied")


async def test_five_identical_documents_are_one_change_line_in_json(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    log = tmp_path / "target.log"
    target, url = _target(redis_server, log, "--log-format", "json", "--log-level", "debug")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        with target:
            writer = ControlPlaneWriter(client, writer="test")
            versions = []
            for _ in range(5):  # the controller republishing the same knobs every tick
                state = await writer.set_knobs({"concurrency_limit": 52}, replica="r1")
                await _applied(url, state.version)
                versions.append(state.version)
    finally:
        await client.aclose()

    records = _records(log)
    assert records, log.read_text()
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    control = [r for r in records if r["logger"] == "surgeguard.control"]
    said = [r["message"] for r in control if r["level"] == "INFO"]
    assert said == [
        "no control document yet: enforcing the start-up knobs and modes",
        f"control v{versions[0]}: concurrency_limit 64 -> 52",
    ]
    quiet = [r["message"] for r in control if r["level"] == "DEBUG"]
    assert quiet == [f"control v{v}: nothing this replica enforces changed" for v in versions[1:]]


async def test_warning_level_hides_info_lines_and_keeps_errors(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    log = tmp_path / "target.log"
    target, url = _target(redis_server, log, "--log-level", "warning", "--log-format", "json")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        with target:
            writer = ControlPlaneWriter(client, writer="test")
            state = await writer.set_knobs({"concurrency_limit": 40})
            await _applied(url, state.version)  # a change: an INFO line, hidden
            await client.set(CONTROL_KEY, '{"version": 99, "knobs": {"concurrency_limit": 0}}')

            async def refused() -> bool:
                return any(r["level"] == "ERROR" for r in _records(log))

            await eventually(refused, 10.0, "the refused document logged")
    finally:
        await client.aclose()

    records = _records(log)
    assert [r["level"] for r in records] == ["ERROR"], records
    assert "refused control document" in records[0]["message"]
