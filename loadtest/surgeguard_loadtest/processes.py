"""Child ``surgeguard`` processes for benchmarks and tests: start, wait, stop by pid."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from surgeguard.runtime.process import die_with_parent, terminate
from surgeguard.runtime.process import free_port as free_port  # re-exported

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0


class ChildError(RuntimeError):
    """A child did not start, with the tail of its log."""


def child_env(redis_url: str | None = None, **settings: str) -> dict[str, str]:
    """Our environment minus stray ``SURGEGUARD_*`` settings (so nothing in the
    caller's shell changes what is measured), plus ``settings`` as variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGEGUARD_")}
    if redis_url is not None:
        env["SURGEGUARD_REDIS_URL"] = redis_url
    env.update({f"SURGEGUARD_{k.upper()}": v for k, v in settings.items()})
    return env


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def spawn(
    args: Sequence[str], env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``surgeguard ARGS`` in a new session (a terminal's Ctrl-C reaches only us)."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "surgeguard", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Poll ``url`` until it answers 200; fail if the child dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            command = shlex.join(str(a) for a in process.args)  # type: ignore[union-attr]
            raise ChildError(f"{command} exited with {process.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise ChildError(f"{url} did not answer within {timeout_s:.0f} s:\n{tail(log)}")


@contextmanager
def running(
    args: Sequence[str], env: dict[str, str], health_url: str, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``surgeguard ARGS`` for the life of the block, healthy before it starts."""
    process = spawn(args, env, log)
    try:
        wait_healthy(health_url, process, log)
        yield process
    finally:
        terminate(process)
