"""Real ``surgeguard`` subcommands as child processes, stopped by pid however a test ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from subprocess import Popen

from loadtest.processes import child_env, free_port, running, stop

__all__ = ["clean_env", "free_port", "stop", "surgeguard"]


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
