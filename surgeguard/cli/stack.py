"""``surgeguard up``: the whole stack on one machine, as supervised child processes.

The embedded Redis (unless ``SURGEGUARD_REDIS_URL`` is set), the embedded Postgres
(unless ``SURGEGUARD_DATABASE_URL`` is set) and one process per service. Every child
dies with this process (PDEATHSIG), and Ctrl-C (or SIGTERM) stops them in reverse
order, each with a grace period. The admin token is printed once, in the start
banner; SIGUSR1 prints the URLs, pids and where the token is kept
again (``surgeguard status`` prints the same from the state file, see stack_state).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import httpx

from surgeguard.cli import stack_state
from surgeguard.cli.settings import StackSettings
from surgeguard.cli.stack_state import Service, StackState
from surgeguard.logs import LogConfig
from surgeguard.runtime.embedded_postgres import DEFAULT_POOL_SLOTS, EmbeddedPostgres, mask_password
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.runtime.process import die_with_parent, free_port, terminate
from surgeguard_target_app.remote.api import REMOTE_NAMES
from surgeguard_target_app.settings import DEMO_CLIENT_KEY

log = logging.getLogger("surgeguard.up")

READY_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    health_path: str = "/healthz"


def _spawn(
    name: str, args: list[str], env: dict[str, str], url: str, health_path: str = "/healthz"
) -> Child:
    process = subprocess.Popen(
        [sys.executable, "-m", "surgeguard", *args], env=env, preexec_fn=die_with_parent()
    )
    return Child(name, url, process, health_path)


def _wait_healthy(child: Child, deadline: float) -> None:
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.process.returncode}")
        try:
            if httpx.get(f"{child.url}{child.health_path}", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{child.name} did not answer {child.url}{child.health_path} within {READY_TIMEOUT_S:.0f} s"
    )


def _remote_apis(
    settings: StackSettings, env: dict[str, str], common: Sequence[str]
) -> tuple[list[Child], list[Service]]:
    """One ``surgeguard remote NAME`` per remote API that has no URL yet (a given URL
    is an external one: used, not started), on a free port; each URL goes into ``env``
    so every replica calls it. The children, and their lines for the state file."""
    children, services = [], []
    for name in REMOTE_NAMES:
        given = settings.remote_url(name)
        capacity, latency_s = settings.dependency(name)
        if given:
            services.append(Service(name, given, None, None, "external remote API"))
            continue
        url = f"http://{settings.host}:{free_port(settings.host)}"
        port = url.rsplit(":", 1)[1]
        children.append(_spawn(name, ["remote", name, "--port", port, *common], env, url))
        env[f"SURGEGUARD_{name.upper()}_URL"] = url
        note = f"remote API, {capacity} slots x {latency_s * 1000:g} ms, shared by the replicas"
        services.append(Service(name, url, None, f"{url}/healthz", note))
    return children, services


@dataclass(frozen=True)
class PassOn:
    """Flags ``up`` hands to its children as given (the rest they read from the same
    ``SURGEGUARD_*`` environment): to all of them, to the controller, to the dashboard."""

    all: Sequence[str] = ()
    controller: Sequence[str] = ()
    dashboard: Sequence[str] = ()


def _without_password(url: str) -> str:
    """A Redis URL fit to print again: ``redis://:secret@host`` -> ``redis://***@host``."""
    head, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    return f"{head}{sep}***@{hostpart}" if at and "/" not in userinfo else url


def _db_pool_slots(settings: StackSettings) -> int:
    """Connections the embedded Postgres gives the replicas: the db's budget (the total
    every replica's bulkhead.db shares) when one is set, else a default. Postgres then
    honours exactly that many (max_connections less the superuser's reserve)."""
    return settings.budget_totals.get("db", DEFAULT_POOL_SLOTS)


def stack_token(settings: StackSettings) -> str:
    """The admin token up hands the controller: the given one, else a new one (24
    characters). Empty when operators are configured another way (named tokens, token
    files): the controller reads those itself, and up neither makes nor shows one."""
    configured = bool(
        settings.admin_tokens or settings.admin_token_file or settings.admin_tokens_file
    )
    return settings.admin_token or ("" if configured else secrets.token_urlsafe(18))


def _keep_token(token: str, given: bool, data_dir: Path) -> str | None:
    """Where the token is kept: a generated one in a 0600 file, a given one nowhere new."""
    if given:
        return None
    path = data_dir / stack_state.TOKEN_NAME
    stack_state.write_private(path, token + "\n")
    return str(path)


def up(
    settings: StackSettings,
    *,
    target_port: int,
    worker_metrics_port: int | None = None,
    controller_port: int | None = None,
    dashboard_port: int | None = None,
    logs: LogConfig | None = None,
    pass_on: PassOn | None = None,
) -> int:
    """Start everything, print where it is, and supervise until Ctrl-C."""
    stop_requested = False
    show_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    def request_show(signum: int, frame: FrameType | None) -> None:
        nonlocal show_requested
        show_requested = True  # printed by the loop: a handler must not print

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, request_show)  # before start-up: its default kills

    pass_on = pass_on or PassOn()
    common = [*(logs or LogConfig()).argv(), *pass_on.all]
    data_dir = Path(settings.data_dir).expanduser().resolve()
    token = stack_token(settings)
    embedded = (
        None if settings.redis_url else EmbeddedRedis(data_dir=data_dir, fsync=settings.redis_fsync)
    )
    postgres = (
        None
        if settings.database_url
        else EmbeddedPostgres(data_dir=data_dir, pool_slots=_db_pool_slots(settings))
    )
    children: list[Child] = []
    status = 0
    state: StackState | None = None
    try:
        if embedded is not None:
            embedded.start()
        redis_url = settings.redis_url or (embedded.url if embedded else "")
        if postgres is not None:
            postgres.start()
        database_url = settings.database_url or (postgres.url if postgres else "")
        env = {
            **os.environ,
            "SURGEGUARD_REDIS_URL": redis_url,
            "SURGEGUARD_DATABASE_URL": database_url,
        }
        if token:
            env["SURGEGUARD_ADMIN_TOKEN"] = token
        host = settings.host
        # The remote APIs first: the replica calls them (and they stop after it).
        remotes, remote_services = _remote_apis(settings, env, common)
        children += remotes
        # Liveness probes and scrapes that never wait behind a storm (health_listener).
        health_port = settings.health_port or free_port(host)
        children.append(
            _spawn(
                "target",
                ["target", "--port", str(target_port), "--health-port", str(health_port), *common],
                env,
                f"http://{host}:{target_port}",
            )
        )
        # One job worker; its /metrics (and /healthz) on a port of its own.
        worker_port = worker_metrics_port or settings.worker_metrics_port or free_port(host)
        children.append(
            _spawn(
                "worker",
                ["worker", "--metrics-port", str(worker_port), *common],
                env,
                f"http://{host}:{worker_port}",
            )
        )
        # The controller, tuning the target from its metrics.
        controller_port = controller_port or settings.controller_port
        target_url = f"http://{host}:{target_port}"
        children.append(
            _spawn(
                "controller",
                [
                    "controller",
                    "--target",
                    target_url,
                    "--port",
                    str(controller_port),
                    *common,
                    *pass_on.controller,
                ],
                env,
                f"http://{host}:{controller_port}",
            )
        )
        # The operator dashboard, reading (and acting through) the controller. It gets no
        # admin token: operators type theirs into the page.
        dashboard_port = dashboard_port or settings.dashboard_port
        controller_url = f"http://{host}:{controller_port}"
        children.append(
            _spawn(
                "dashboard",
                [
                    "dashboard",
                    "--controller",
                    controller_url,
                    "--port",
                    str(dashboard_port),
                    *common,
                    *pass_on.dashboard,
                ],
                {k: v for k, v in env.items() if k != "SURGEGUARD_ADMIN_TOKEN"},
                f"http://{host}:{dashboard_port}",
                health_path="/_stcore/health",
            )
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in children:
            _wait_healthy(child, deadline)

        token_file = _keep_token(token, bool(settings.admin_token), data_dir) if token else None
        pids = {c.name: c.process.pid for c in children}
        state = StackState(
            pid=os.getpid(),
            started_at=time.time(),
            data_dir=str(data_dir),
            token_file=token_file,
            services=(
                Service(
                    "redis",
                    _without_password(redis_url),
                    embedded.pid if embedded else None,
                    note=f"embedded, data in {data_dir}" if embedded else "external",
                ),
                Service(
                    "postgres",
                    mask_password(database_url),
                    postgres.pid if postgres else None,
                    note=(
                        f"embedded, cluster in {postgres.cluster_dir}, {postgres.pool_slots} "
                        "connections for the replicas"
                        if postgres
                        else "external"
                    ),
                ),
                Service(
                    "target",
                    target_url,
                    pids["target"],
                    f"{target_url}/healthz",
                    "metrics /metrics, health /healthz",
                ),
                *(replace(s, pid=pids.get(s.name)) for s in remote_services),
                Service(
                    "probes",
                    f"http://{host}:{health_port}/healthz",
                    None,
                    f"http://{host}:{health_port}/healthz",
                    "and /metrics: a thread of their own, answers during a storm",
                ),
                Service(
                    "worker",
                    f"http://{host}:{worker_port}/metrics",
                    pids["worker"],
                    f"http://{host}:{worker_port}/healthz",
                    f"concurrency {settings.worker_concurrency}",
                ),
                Service(
                    "controller",
                    f"{controller_url}/api/v1/state",
                    pids["controller"],
                    f"{controller_url}/healthz",
                    f"{settings.controller_algorithm}, tick {settings.controller_tick_ms} ms",
                ),
                Service(
                    "dashboard",
                    f"http://{host}:{dashboard_port}",
                    pids["dashboard"],
                    f"http://{host}:{dashboard_port}/_stcore/health",
                ),
            ),
        )
        stack_state.write_private(stack_state.state_path(data_dir), state.to_json())

        demo = DEMO_CLIENT_KEY in settings.client_key_set
        demo_note = "  (the documented demo key)" if demo else ""
        kept = f"; kept in {token_file}, mode 0600" if token_file else ""
        print(
            "surgeguard is up\n"
            + "\n".join(stack_state.service_lines(state))
            + (
                f"\n  admin token {token}   (shown only here{kept})\n"
                if token
                else "\n  admin token yours (SURGEGUARD_ADMIN_TOKENS or a token file)\n"
            )
            + f"  client key  {sorted(settings.client_key_set)[0]}{demo_note}\n"
            f"Rehearse a spike: surgeguard load --scenario spike --out load-out "
            f"(or from the dashboard's Drills panel)\n"
            f"These URLs again: surgeguard status --data-dir {data_dir}, "
            f"or kill -USR1 {os.getpid()}\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop_requested:
            if show_requested:
                show_requested = False
                print(stack_state.describe(state, stack_state.probe(state)), flush=True)
            for child in children:
                if child.process.poll() is not None:
                    log.error(
                        "%s exited with status %d; stopping the stack",
                        child.name,
                        child.process.returncode,
                    )
                    status = 1
                    stop_requested = True
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"surgeguard up: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        if state is not None:
            stack_state.remove_state(data_dir, state.pid)
        for child in reversed(children):
            terminate(child.process, timeout_s=10.0)
        if postgres is not None:
            postgres.stop()
        if embedded is not None:
            embedded.stop()
        print("surgeguard stopped", flush=True)
    return status
