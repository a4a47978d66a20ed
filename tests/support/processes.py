"""Real ``surgeguard`` subcommands as child processes, stopped by pid however a test ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from subprocess import Popen

from surgeguard_loadtest.processes import child_env, free_port, running, stop

__all__ = ["clean_env", "db_bound_env", "free_port", "stop", "surgeguard"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without stray SURGEGUARD_* settings, plus ``extra``."""
    env = child_env()
    env.update(extra)
    return env


@contextmanager
def surgeguard(*args: str, env: dict[str, str], health_url: str) -> Iterator[Popen[bytes]]:
    """Run ``surgeguard ARGS`` until the block ends, healthy before it starts."""
    with running(args, env, health_url) as process:
        yield process


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
