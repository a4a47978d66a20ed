"""``surgeguard up``: the whole stack on one machine, as supervised child processes.

The embedded Redis (unless ``SURGEGUARD_REDIS_URL`` is set) and one process per
service. Every child dies with this process (PDEATHSIG), and Ctrl-C (or SIGTERM)
stops them in reverse order, each with a grace period.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

import httpx

from surgeguard.embedded_redis import EmbeddedRedis
from surgeguard.process import die_with_parent, terminate
from surgeguard.settings import DEMO_CLIENT_KEY, Settings

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


def _free_port(host: str) -> int:
    """A port nothing listens on right now (for a child asked to take "any" port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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


def up(
    settings: Settings,
    *,
    target_port: int,
    worker_metrics_port: int | None = None,
    controller_port: int | None = None,
    dashboard_port: int | None = None,
) -> int:
    """Start everything, print where it is, and supervise until Ctrl-C."""
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    token = settings.admin_token or secrets.token_urlsafe(18)
    embedded = None if settings.redis_url else EmbeddedRedis(data_dir=settings.data_dir)
    children: list[Child] = []
    status = 0
    try:
        if embedded is not None:
            embedded.start()
        redis_url = settings.redis_url or (embedded.url if embedded else "")
        env = {**os.environ, "SURGEGUARD_REDIS_URL": redis_url, "SURGEGUARD_ADMIN_TOKEN": token}
        host = settings.host
        # Liveness probes and scrapes that never wait behind a storm (health_listener).
        health_port = settings.health_port or _free_port(host)
        children.append(
            _spawn(
                "target",
                ["target", "--port", str(target_port), "--health-port", str(health_port)],
                env,
                f"http://{host}:{target_port}",
            )
        )
        # One job worker; its /metrics (and /healthz) on a port of its own.
        worker_port = worker_metrics_port or settings.worker_metrics_port or _free_port(host)
        children.append(
            _spawn(
                "worker",
                ["worker", "--metrics-port", str(worker_port)],
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
                ["controller", "--target", target_url, "--port", str(controller_port)],
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
                ["dashboard", "--controller", controller_url, "--port", str(dashboard_port)],
                {k: v for k, v in env.items() if k != "SURGEGUARD_ADMIN_TOKEN"},
                f"http://{host}:{dashboard_port}",
                health_path="/_stcore/health",
            )
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in children:
            _wait_healthy(child, deadline)

        demo = DEMO_CLIENT_KEY in settings.client_key_set
        demo_note = "  (the documented demo key)" if demo else ""
        where = "embedded, data in " + str(settings.data_dir) if embedded else "external"
        print(
            f"surgeguard is up\n"
            f"  redis       {redis_url}  ({where})\n"
            f"  target      http://{host}:{target_port}   "
            f"(metrics /metrics, health /healthz)\n"
            f"  probes      http://{host}:{health_port}/healthz   "
            f"(and /metrics: a thread of their own, answers during a storm)\n"
            f"  worker      http://{host}:{worker_port}/metrics   "
            f"(concurrency {settings.worker_concurrency})\n"
            f"  controller  http://{host}:{controller_port}/api/v1/state   "
            f"({settings.controller_algorithm}, tick {settings.controller_tick_ms} ms)\n"
            f"  dashboard   http://{host}:{dashboard_port}\n"
            f"  admin token {token}\n"
            f"  client key  {sorted(settings.client_key_set)[0]}{demo_note}\n"
            f"Rehearse a spike: surgeguard load --scenario spike --out load-out "
            f"(or from the dashboard's Drills panel)\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop_requested:
            for child in children:
                if child.process.poll() is not None:
                    print(
                        f"{child.name} exited with status {child.process.returncode}; "
                        "stopping the stack",
                        file=sys.stderr,
                        flush=True,
                    )
                    status = 1
                    stop_requested = True
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"surgeguard up: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        for child in reversed(children):
            terminate(child.process, timeout_s=10.0)
        if embedded is not None:
            embedded.stop()
        print("surgeguard stopped", flush=True)
    return status
