"""``surgeguard SUBCOMMAND``: the command-line edge.

Flags override ``SURGEGUARD_*`` variables; anything invalid ends with one line on
stderr naming the setting and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from surgeguard.modes import Mode
from surgeguard.settings import SettingsError, load_settings


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [1, 65535], got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surgeguard",
        description="Keep a web service fast when traffic spikes far past what it can serve.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    up = sub.add_parser(
        "up",
        help="run the whole stack on this machine",
        description="Start the embedded Redis (unless SURGEGUARD_REDIS_URL is "
        "set), the target service and one job worker; print their URLs and the "
        "admin token; Ctrl-C stops everything.",
    )
    up.add_argument("--target-port", type=_port, default=8000, help="default 8000")
    up.add_argument(
        "--worker-metrics-port", type=_port, help="default 8002 (SURGEGUARD_WORKER_METRICS_PORT)"
    )
    up.add_argument(
        "--controller-port", type=_port, help="default 8001 (SURGEGUARD_CONTROLLER_PORT)"
    )
    up.add_argument("--dashboard-port", type=_port, help="default 8501 (SURGEGUARD_DASHBOARD_PORT)")
    up.add_argument("--data-dir", type=Path, help="embedded Redis data (SURGEGUARD_DATA_DIR)")

    red = sub.add_parser(
        "redis",
        help="run the embedded Redis server standalone",
        description="A real redis-server with append-only persistence.",
    )
    red.add_argument("--port", type=_port, help="default: a free port")
    red.add_argument("--data-dir", type=Path, help="default ./.surgeguard (SURGEGUARD_DATA_DIR)")

    target = sub.add_parser(
        "target",
        help="run one replica of the demo service",
        description="The demo service behind admission control. Initial "
        "knobs come from these flags or SURGEGUARD_* variables; "
        "the control plane in Redis may change them later.",
    )
    target.add_argument("--host", help="default 127.0.0.1 (SURGEGUARD_HOST)")
    target.add_argument("--port", type=_port, default=8000, help="default 8000")
    target.add_argument("--replica-id", help="default host:port (SURGEGUARD_REPLICA_ID)")
    target.add_argument(
        "--health-port",
        type=int,
        help="also answer /healthz and /metrics on this port from a thread of their own "
        "(0: any free port; default off; SURGEGUARD_HEALTH_PORT)",
    )
    target.add_argument("--concurrency-limit", type=int, help="requests in flight at once")
    target.add_argument("--queue-limit", type=int, help="requests that may wait")
    target.add_argument("--queue-timeout-ms", type=int, help="longest wait for a slot, ms")
    target.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="MODE",
        help="degradation mode on at start (repeatable): " + ", ".join(m.value for m in Mode),
    )
    target.add_argument(
        "--no-admission",
        action="store_true",
        default=None,
        help="admission middleware off (to measure its cost)",
    )
    target.add_argument("--data-dir", type=Path, help="embedded Redis data when no URL is set")

    worker = sub.add_parser(
        "worker",
        help="run one job worker",
        description="Consume the job streams (welcome emails, analytics) of the Redis "
        "in SURGEGUARD_REDIS_URL with a consumer group: retries with backoff, dead "
        "letters, reclaim of stuck jobs. Serves /metrics; SIGTERM stops it gracefully. "
        "Other settings: SURGEGUARD_JOB_* and SURGEGUARD_MAILER_* variables.",
    )
    worker.add_argument("--host", help="metrics interface, default 127.0.0.1 (SURGEGUARD_HOST)")
    worker.add_argument(
        "--metrics-port", type=int, help="default 8002, 0: any (SURGEGUARD_WORKER_METRICS_PORT)"
    )
    worker.add_argument(
        "--concurrency", type=int, help="jobs at once, default 64 (SURGEGUARD_WORKER_CONCURRENCY)"
    )
    worker.add_argument(
        "--consumer", help="consumer name in the group, default host-pid (SURGEGUARD_WORKER_ID)"
    )
    ctl = sub.add_parser(
        "controller",
        help="run the feedback controller against target replicas",
        description="Reads each replica's /metrics every tick, tunes the knobs with the "
        "chosen algorithm, and serves the operator API under /api/v1. Operator writes "
        "need SURGEGUARD_ADMIN_TOKEN.",
    )
    ctl.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL",
        help="a target replica to tune (repeatable; SURGEGUARD_CONTROLLER_TARGETS)",
    )
    ctl.add_argument("--host", help="default 127.0.0.1 (SURGEGUARD_HOST)")
    ctl.add_argument("--port", type=_port, help="default 8001 (SURGEGUARD_CONTROLLER_PORT)")
    ctl.add_argument("--tick-ms", type=int, help="control tick, ms (default 1000)")
    ctl.add_argument("--algorithm", help="aimd (default), static or gradient")
    ctl.add_argument("--scope", help="replica (default: each from its own signals) or global")
    ctl.add_argument(
        "--auto-degrade",
        action="store_true",
        default=None,
        help="let the controller switch degradation modes when limits alone fail",
    )
    ctl.add_argument(
        "--no-hold-rule",
        dest="hold_rule",
        action="store_false",
        default=None,
        help="cut knobs on latency alone, without asking whether the knob causes it "
        "(the controller before the hold rule; SURGEGUARD_CONTROLLER_HOLD_RULE=false)",
    )
    ctl.add_argument(
        "--prometheus-url",
        help="take signals from this Prometheus (it must scrape the targets) instead of "
        "scraping each target's /metrics (SURGEGUARD_PROMETHEUS_URL)",
    )
    ctl.add_argument("--data-dir", type=Path, help="embedded Redis data when no URL is set")

    dash = sub.add_parser(
        "dashboard",
        help="run the operator dashboard (Streamlit)",
        description="The operator dashboard: status, charts and actions, all through the "
        "controller's API. Runs `streamlit run dashboard/app.py` in this process and hands "
        "it the controller's URL as SURGEGUARD_CONTROLLER_URL. Operators type the admin "
        "token into the page; the dashboard itself holds none.",
    )
    dash.add_argument(
        "--controller",
        metavar="URL",
        help="the controller's base URL, default http://127.0.0.1:8001 (SURGEGUARD_CONTROLLER_URL)",
    )
    dash.add_argument("--host", help="interface to listen on, default 127.0.0.1 (SURGEGUARD_HOST)")
    dash.add_argument("--port", type=_port, help="default 8501 (SURGEGUARD_DASHBOARD_PORT)")
    dash.add_argument(
        "--refresh-ms",
        type=int,
        help="live-refresh period, ms, default 2000 (SURGEGUARD_DASHBOARD_REFRESH_MS)",
    )
    load = sub.add_parser(
        "load",
        help="run a Locust load scenario against a running service",
        description="Runs Locust headless in its own process with the scenario's shape, "
        "shows progress, watches the service's /metrics and /healthz, and writes "
        "summary.json, Locust's CSV files and its HTML report into --out. Scenarios: "
        "spike, step, soak, slow_dependency, retry_storm, and storm: polite users plus a "
        "wrk storm of impatient connections that ignore Retry-After (needs wrk; "
        "loadtest/scenarios.py). "
        "SIGTERM or Ctrl-C ends the run early; the reports are still written.",
    )
    load.add_argument("--scenario", metavar="NAME", help="which scenario (--tune: step)")
    load.add_argument(
        "--host", default="http://127.0.0.1:8000", help="the target, default http://127.0.0.1:8000"
    )
    load.add_argument("--users", type=int, help="most users at once (default: the scenario's)")
    load.add_argument(
        "--duration", type=float, metavar="S", help="whole run, seconds (default: the scenario's)"
    )
    load.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory")
    load.add_argument(
        "--tune",
        action="store_true",
        help="run the step scenario with the controller on and report what every knob "
        "converged to and where the capacity knee is",
    )
    load.add_argument(
        "--controller",
        metavar="URL",
        help="the controller (for --tune, slow_dependency's chaos and chart markers), "
        "default http://127.0.0.1:8001 (SURGEGUARD_CONTROLLER_URL); "
        "writes use SURGEGUARD_ADMIN_TOKEN",
    )
    load.add_argument(
        "--processes", type=int, default=1, help="Locust processes (forked), default 1"
    )
    load.add_argument(
        "--no-marks", action="store_true", help="do not announce the run to the controller"
    )
    load.add_argument(
        "--storm-connections",
        type=int,
        default=2000,
        metavar="N",
        help="storm scenario: wrk's impatient connections, default 2000",
    )
    load.add_argument(
        "--storm-threads", type=int, default=2, help="storm scenario: wrk threads, default 2"
    )
    load.add_argument(
        "--storm-key",
        help="storm scenario: the one client key of the storm (default: the first of "
        "SURGEGUARD_CLIENT_KEYS; the polite users get the others)",
    )

    bench = sub.add_parser(
        "bench",
        help="compare admission policies under the same spike, or a storm guarded and not",
        description="spike: for each policy a freshly started stack (embedded Redis, one "
        "target, the controller for aimd and gradient) gets the same Locust spike, sized "
        "from the capacity measured first. storm: one replica with its controller, guarded "
        "(defaults) and unguarded (no penalty box, no hold rule), each through a polite "
        "closed loop, two wrk storms of impatient connections and a keyless attacker "
        "claiming critical (needs wrk). The service's own metrics are the truth. Writes "
        "summary.json, report.md (and the spike's plots) into --out.",
    )
    bench.add_argument(
        "--scenario", default="spike", choices=("spike", "storm"), help="default spike"
    )
    bench.add_argument(
        "--policies",
        default="none,static,aimd",
        help="comma-separated: none, static, aimd, gradient",
    )
    bench.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="spike: a 40 s run per policy (within 3 minutes in all); storm: shorter "
        "phases and smaller storms (about 2 minutes in all)",
    )
    bench.add_argument(
        "--storms",
        metavar="SMALL,LARGE",
        help="storm: the two storms' connections, default 2000,10000 (--quick: 500,2000)",
    )
    bench.add_argument(
        "--seconds",
        type=float,
        metavar="S",
        help="storm: every measured phase's length, seconds (default: polite 15, "
        "storms 30, attacker and alone 10 each; --quick: 5, 10, 5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "redis":
            from surgeguard.embedded_redis import run_forever

            settings = load_settings(data_dir=args.data_dir)
            return run_forever(args.port, settings.data_dir)
        if args.command == "up":
            from surgeguard.stack import up

            settings = load_settings(data_dir=args.data_dir)
            return up(
                settings,
                target_port=args.target_port,
                worker_metrics_port=args.worker_metrics_port,
                controller_port=args.controller_port,
                dashboard_port=args.dashboard_port,
            )
        if args.command == "target":
            from target_app.server import serve

            settings = load_settings(
                host=args.host,
                replica_id=args.replica_id,
                health_port=args.health_port,
                data_dir=args.data_dir,
                concurrency_limit=args.concurrency_limit,
                queue_limit=args.queue_limit,
                queue_timeout_ms=args.queue_timeout_ms,
                no_admission=args.no_admission,
                modes=",".join(args.mode) if args.mode else None,
            )
            return serve(settings, args.port)
        if args.command == "controller":
            from controller.server import serve as serve_controller
            from surgeguard.embedded_redis import redis_url_for

            settings = load_settings(
                flags={
                    "controller_port": "--port",
                    "controller_tick_ms": "--tick-ms",
                    "controller_algorithm": "--algorithm",
                    "controller_scope": "--scope",
                    "controller_targets": "--target",
                    "controller_hold_rule": "--no-hold-rule",
                },
                host=args.host,
                controller_port=args.port,
                controller_tick_ms=args.tick_ms,
                controller_algorithm=args.algorithm,
                controller_scope=args.scope,
                auto_degrade=args.auto_degrade,
                controller_hold_rule=args.hold_rule,
                prometheus_url=args.prometheus_url,
                controller_targets=",".join(args.target) if args.target else None,
                data_dir=args.data_dir,
            )
            targets = settings.controller_target_list
            if not targets:
                raise SettingsError(
                    "no target to tune: give --target URL (or SURGEGUARD_CONTROLLER_TARGETS)"
                )
            with redis_url_for(settings.redis_url, settings.data_dir) as url:
                return serve_controller(settings, url, targets, settings.controller_port)
        if args.command == "dashboard":
            from dashboard.server import serve as serve_dashboard

            settings = load_settings(
                flags={
                    "controller_url": "--controller",
                    "dashboard_port": "--port",
                    "dashboard_refresh_ms": "--refresh-ms",
                },
                controller_url=args.controller,
                host=args.host,
                dashboard_port=args.port,
                dashboard_refresh_ms=args.refresh_ms,
            )
            return serve_dashboard(settings)
        if args.command == "load":
            from loadtest.load_command import run_load_command

            return run_load_command(args)
        if args.command == "bench" and args.scenario == "storm":
            from loadtest.bench_storm import run_storm_command

            return run_storm_command(args)
        if args.command == "bench":
            from loadtest.bench import run_bench_command

            return run_bench_command(args)
        if args.command == "worker":
            from target_app.worker_server import run_worker

            settings = load_settings(
                flags={
                    "worker_metrics_port": "--metrics-port",
                    "worker_concurrency": "--concurrency",
                    "worker_id": "--consumer",
                },
                host=args.host,
                worker_metrics_port=args.metrics_port,
                worker_concurrency=args.concurrency,
                worker_id=args.consumer,
            )
            return run_worker(settings)
    except SettingsError as exc:
        print(f"surgeguard {args.command}: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled subcommand {args.command}")
