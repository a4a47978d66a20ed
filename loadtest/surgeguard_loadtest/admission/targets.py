"""The admission benchmark's targets: the three variants it compares, and the
``surgeguard target`` children that serve them, each started on a free port and
stopped by its pid."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from surgeguard.runtime.process import terminate
from surgeguard_loadtest.processes import (
    HOST,
    READY_TIMEOUT_S,
    ChildError,
    child_env,
    free_port,
    spawn,
    tail,
    wait_healthy,
)

PATH = "/ping"
STOP_TIMEOUT_S = 10.0
TARGET_LIMITS = ("--concurrency-limit", "10000", "--queue-limit", "1000")


# -- the variants ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One target configuration and the request load sent to it."""

    name: str
    description: str
    target_args: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    expected_status: int


ADMISSION_ON = Variant("admission_on", "GET /ping, admission on", (), (), 200)
ADMISSION_OFF = Variant("admission_off", "GET /ping, --no-admission", ("--no-admission",), (), 200)
REJECTION = Variant(
    "rejection",
    "GET /ping X-Priority: sheddable, --mode shed_sheddable",
    ("--mode", "shed_sheddable"),
    (("X-Priority", "sheddable"),),
    429,
)
VARIANTS: tuple[Variant, ...] = (ADMISSION_ON, ADMISSION_OFF, REJECTION)


# -- target processes -----------------------------------------------------------------


@dataclass
class Target:
    """One running ``surgeguard target`` child."""

    variant: Variant
    port: int
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_target(variant: Variant, env: Mapping[str, str], log_dir: Path) -> Target:
    """Spawn a target for ``variant`` on a free port; output goes to a log file."""
    port = free_port()
    args = ["target", "--host", HOST, "--port", str(port), *TARGET_LIMITS, *variant.target_args]
    log_path = log_dir / f"{variant.name}.log"
    process = spawn(args, dict(env), log_path)
    return Target(variant, port, [sys.executable, "-m", "surgeguard", *args], process, log_path)


def wait_target(target: Target, deadline: float) -> None:
    """Poll ``/healthz`` until 200 or ``deadline`` (a ``time.monotonic()`` value);
    raises ``ChildError`` saying why the target is not up, with its log's tail."""
    try:
        wait_healthy(
            f"{target.base_url}/healthz",
            target.process,
            target.log_path,
            timeout_s=deadline - time.monotonic(),
        )
    except ChildError as exc:
        if target.process.poll() is not None:
            problem = f"exited with status {target.process.returncode}"
        else:
            problem = f"did not answer /healthz within {READY_TIMEOUT_S:.0f} s"
        raise ChildError(
            f"target {target.variant.name} {problem}:\n{tail(target.log_path)}"
        ) from exc


@contextmanager
def running_targets(
    variants: Sequence[Variant], redis_url: str, log_dir: Path
) -> Iterator[list[Target]]:
    """All targets up and healthy for the block; each stopped by its pid afterwards."""
    targets: list[Target] = []
    try:
        env = child_env(redis_url)
        for variant in variants:  # spawn all first: they import in parallel
            targets.append(start_target(variant, env, log_dir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for target in targets:
            wait_target(target, deadline)
        yield targets
    finally:
        with _signals_deferred():  # a second Ctrl-C must not cut the cleanup short
            for target in reversed(targets):
                terminate(target.process, timeout_s=STOP_TIMEOUT_S)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block; they are delivered after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
