"""The command line: bad input is one clear line; ``surgeguard up`` runs and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SURGEGUARD = [sys.executable, "-m", "surgeguard"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SURGEGUARD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("sub", ["up", "redis", "target", "worker", "controller", "dashboard"])
def test_every_subcommand_has_help(sub: str) -> None:
    result = _run(sub, "--help")
    assert result.returncode == 0
    assert "usage: surgeguard" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["target", "--concurrency-limit", "0"], {}, ["--concurrency-limit", "[1, 10000]"]),
        (["target", "--queue-timeout-ms", "999999"], {}, ["--queue-timeout-ms", "[1, 60000]"]),
        (["target", "--mode", "panic"], {}, ["mode", "'panic'", "shed_sheddable"]),
        (["target"], {"SURGEGUARD_DB_CAPACITY": "lots"}, ["SURGEGUARD_DB_CAPACITY", "integer"]),
        (["target"], {"SURGEGUARD_SLO_P99_MS": "0"}, ["SURGEGUARD_SLO_P99_MS", "[1, 60000]"]),
        (["up"], {"SURGEGUARD_CLIENT_KEYS": " , "}, ["SURGEGUARD_CLIENT_KEYS", "client key"]),
    ],
)
def test_invalid_settings_stop_start_up_with_one_line(
    args: list[str], env: dict[str, str], names: list[str]
) -> None:
    result = _run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0]


def test_invalid_port_is_refused_by_the_parser() -> None:
    result = _run("target", "--port", "70000")
    assert result.returncode == 2
    assert "port must be in [1, 65535], got 70000" in result.stderr


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_up_starts_the_stack_prints_urls_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, ctl_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SURGEGUARD_REDIS_URL"}
    proc = subprocess.Popen(
        [
            *SURGEGUARD,
            "up",
            "--target-port",
            str(port),
            "--controller-port",
            str(ctl_port),
            "--worker-metrics-port",
            str(_free_port()),
            "--dashboard-port",
            str(dash_port := _free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("Press Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
        banner = "".join(lines)
        assert f"http://127.0.0.1:{port}" in banner
        assert re.search(r"redis\s+redis://127\.0\.0\.1:\d+", banner)
        assert re.search(r"admin token\s+\S{16,}", banner)
        children = _children_of(proc.pid)
        # redis-server, the target, the worker, the controller, the dashboard
        assert len(children) == 5
        assert f"http://127.0.0.1:{dash_port}" in banner
        page = httpx.get(f"http://127.0.0.1:{dash_port}/", timeout=5)
        assert page.status_code == 200
        state = httpx.get(f"http://127.0.0.1:{ctl_port}/api/v1/state", timeout=5)
        assert state.status_code == 200 and state.json()["algorithm"] == "aimd"
        token = re.search(r"admin token\s+(\S+)", banner)
        assert token is not None
        paused = httpx.put(
            f"http://127.0.0.1:{ctl_port}/api/v1/autopilot",
            timeout=5,
            json={"enabled": True, "reason": "smoke test"},
            headers={"Authorization": f"Bearer {token.group(1)}"},
        )
        assert paused.status_code == 200
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        item = httpx.get(
            f"http://127.0.0.1:{port}/items/1", timeout=5, headers={"X-Api-Key": "demo-key"}
        )
        assert item.status_code == 200

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        for child in children:
            deadline = time.monotonic() + 10
            while _pid_alive(child):
                assert time.monotonic() < deadline, f"child {child} outlived surgeguard up"
                time.sleep(0.05)
        assert (tmp_path / "data").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_controller_needs_a_target() -> None:
    env = {"SURGEGUARD_CONTROLLER_TARGETS": ""}
    result = _run("controller", env=env)
    assert result.returncode == 2
    assert "no target to tune: give --target URL" in result.stderr


def test_controller_rejects_an_unknown_algorithm() -> None:
    result = _run("controller", "--target", "http://127.0.0.1:1", "--algorithm", "pid")
    assert result.returncode == 2
    assert "--algorithm='pid'" in result.stderr and "'aimd'" in result.stderr
