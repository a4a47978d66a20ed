"""Real ``surgeguard`` subcommands as child processes, stopped by pid however a test ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without stray SURGEGUARD_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGEGUARD_")}
    env.update(extra)
    return env


@contextmanager
def surgeguard(*args: str, env: dict[str, str], health_url: str,
               timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``surgeguard ARGS`` until the block ends; wait until ``health_url`` answers."""
    proc = subprocess.Popen([sys.executable, "-m", "surgeguard", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"surgeguard {args[0]} exited with {proc.returncode}"
            try:
                if httpx.get(health_url, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"surgeguard {args[0]} never became healthy"
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
