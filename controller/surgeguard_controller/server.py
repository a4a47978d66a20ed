"""Run the controller process: loop + API on uvicorn."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import httpx
import uvicorn

from surgeguard_controller.app import build_app, connect
from surgeguard_controller.decide import ControllerConfig
from surgeguard_controller.drills.drill import Scenarios
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller
from surgeguard_controller.operators import Operators
from surgeguard_controller.sensing.discovery import Discovery
from surgeguard_controller.sensing.sources import DirectSource, PrometheusSource, SignalSource
from surgeguard_controller.settings import ControllerSettings


def build_controller(
    settings: ControllerSettings, redis_url: str, targets: Sequence[str], http: httpx.AsyncClient
) -> Controller:
    tick_s = settings.controller_tick_ms / 1000.0
    config = ControllerConfig(
        slo_s=settings.slo_seconds,
        algorithm=settings.controller_algorithm,
        auto_degrade=settings.auto_degrade,
        hold_rule=settings.controller_hold_rule,
        # A cut shows fully once a whole signal window has passed after it.
        cooldown_s=max(tick_s, 1.0) + tick_s,
    )
    timeout_s = min(0.8 * tick_s, 2.0)
    redis = connect(redis_url)
    # The static targets and every replica announced in Redis, read again each tick.
    found = Discovery(redis, targets, forget_after_ms=settings.controller_forget_after_ms)
    source: SignalSource
    if settings.prometheus_url:
        source = PrometheusSource(http, settings.prometheus_url, found, timeout_s=timeout_s)
    else:
        source = DirectSource(http, found, timeout_s=timeout_s)
    return Controller(redis, source, config, scope=settings.controller_scope, tick_s=tick_s)


def serve(
    settings: ControllerSettings,
    redis_url: str,
    targets: Sequence[str],
    port: int,
    *,
    scenarios: Scenarios,
) -> int:
    """Run until stopped; ``scenarios``: the load-test scenarios drills may run.
    Raises ``SettingsError`` (one line) for a bad operator token before anything starts."""
    operators = Operators(settings.operator_tokens())
    # A drill's load generator writes chaos through this API as the operator "drill",
    # with a token made for this run (none when operator writes are off).
    own = bool(operators) and "drill" not in operators.names
    drill_token = secrets.token_urlsafe(24) if own else None
    if drill_token is not None:
        operators = operators.with_operator("drill", drill_token)
    http = httpx.AsyncClient()
    controller = build_controller(settings, redis_url, targets, http)
    # Drills load the first target and reach this controller on loopback (its chaos API).
    local = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    drills = DrillRunner(
        controller.redis,
        target=lambda: next(iter(controller.source.targets), ""),
        out_root=settings.data_dir / "drills",
        controller_url=f"http://{local}:{port}",
        admin_token=drill_token,
    )
    app = build_app(
        controller,
        admin_token=None,
        operators=operators,
        scenarios=scenarios,
        http=http,
        drills=drills,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_level="warning",
        log_config=None,  # its lines go through surgeguard.logs like ours
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    people = [n for n in operators.names if n != "drill"]
    writes = f"on for {', '.join(people)}" if people else "OFF (no SURGEGUARD_ADMIN_TOKEN(S))"
    print(
        f"controller on http://{settings.host}:{port} tuning "
        f"{', '.join(targets) + ' and ' if targets else ''}the replicas announced in Redis "
        f"every {controller.tick_s:g} s with {controller.config.algorithm}; "
        f"operator writes {writes}",
        flush=True,
    )
    uvicorn.Server(config).run()
    return 0
