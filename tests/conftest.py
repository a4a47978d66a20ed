"""Shared fixtures: one real Redis server (the embedded one) for the whole session.

And one rule for skips: with ``SURGEGUARD_TESTS_REQUIRE_TOOLS=1`` (``.ci/run`` sets it)
a skipped test fails, because in CI a skip means a tool the suite needs (Prometheus,
promtool, Alertmanager, Chromium, nginx, wrk) was not installed. Only a skip whose
reason starts with ``NOT_POSSIBLE_HERE`` stays a skip: what this kind of machine cannot
do at all (a Docker engine).

In CI the property tests (hypothesis) draw the same examples every run: a run that
lands is one anyone can repeat. Run locally, they draw new ones each time, which is
where a new counterexample is found (then pinned with ``@example``)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import settings

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.clock import FakeClock
from tests.support.tools import NOT_POSSIBLE_HERE

REQUIRE_TOOLS = os.environ.get("SURGEGUARD_TESTS_REQUIRE_TOOLS") == "1"

settings.register_profile("ci", derandomize=True)
if REQUIRE_TOOLS:
    settings.load_profile("ci")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome: Any = yield
    report = outcome.get_result()
    if REQUIRE_TOOLS and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if not reason.startswith(NOT_POSSIBLE_HERE):
            report.outcome = "failed"
            report.longrepr = f"a required tool is missing (CI installs it): {reason}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on a clean database (the session's server is shared)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
