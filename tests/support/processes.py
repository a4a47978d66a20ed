"""Child processes for tests, stopped by pid however a test ends: the one door tests use.

A free port and stopping a child are the runtime's own helpers
(``surgeguard.runtime.process``); starting a ``surgeguard`` subcommand and waiting for
it are the benchmarks' (``surgeguard_loadtest.processes``). ``child`` runs any other
program (Prometheus, Alertmanager) the same way."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from surgeguard.runtime.process import die_with_parent, free_port, terminate
from surgeguard.runtime.process import terminate as stop
from surgeguard_loadtest.processes import (
    ChildError,
    child_env,
    running,
    spawn,
    tail,
    wait_healthy,
)

__all__ = [
    "ChildError",
    "child",
    "child_env",
    "clean_env",
    "controller_process",
    "db_bound_env",
    "free_port",
    "running",
    "spawn",
    "stop",
    "surgeguard",
    "tail",
    "wait_healthy",
]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without stray SURGEGUARD_* settings, plus ``extra``."""
    env = child_env()
    env.update(extra)
    return env


@contextmanager
def surgeguard(
    *args: str, env: dict[str, str], health_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``surgeguard ARGS`` until the block ends, healthy before it starts."""
    with running(args, env, health_url) as process:
        yield process


@contextmanager
def controller_process(
    targets: Sequence[str], env: dict[str, str], *, tick_ms: int = 250
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``surgeguard controller`` tuning ``targets`` every ``tick_ms`` on a free port,
    until the block ends: its URL and its process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [arg for target in targets for arg in ("--target", target)]
    args = ("controller", *flags, "--port", str(port), "--tick-ms", str(tick_ms))
    with surgeguard(*args, env=env, health_url=f"{url}/healthz") as process:
        yield url, process


@contextmanager
def child(
    args: Sequence[str],
    *,
    health_url: str,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 30.0,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen[bytes]]:
    """Any program until the block ends, answering 200 on ``health_url`` before it
    starts; its output goes to ``log`` (quoted when it fails to come up). ``env``: its
    whole environment (None: ours). Stopped with ``stop_signal``, then SIGKILL after
    10 s; it dies with the test run if that dies."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
    finally:
        if not isinstance(out, int):
            out.close()
    try:
        wait_healthy(health_url, process, log, timeout_s=timeout_s)
        yield process
    finally:
        terminate(process, sig=stop_signal)


def db_bound_env(redis_url: str, keys: list[str], **extra: str) -> dict[str, str]:
    """A target whose capacity is its db: 4 slots x 20 ms, about 200 reads/s. Requests
    wait for a db slot (up to 5 s) the way they wait for a pooled connection, so an
    overload shows up as latency, which is what the controller must see.

    The penalty box is off: these tests' clients retry 50 ms after a 429, ignoring its
    Retry-After, to keep the db overloaded; the box would (rightly) slow them to a
    trickle, and the tests are about how the controller answers an overloaded db. The
    box has its own tests, and runs with the controller in the storm benchmark's."""
    return clean_env(
        SURGEGUARD_REDIS_URL=redis_url,
        SURGEGUARD_PENALTY_BOX="false",
        SURGEGUARD_DB_CAPACITY="4",
        SURGEGUARD_DB_LATENCY_MS="20",
        SURGEGUARD_CONCURRENCY_LIMIT="100",
        SURGEGUARD_BULKHEAD_MAX_WAIT_MS="5000",
        SURGEGUARD_DEPENDENCY_TIMEOUT_MS="5000",
        SURGEGUARD_CONTROL_POLL_MS="200",
        SURGEGUARD_CLIENT_KEYS=",".join(keys),
        **extra,
    )
