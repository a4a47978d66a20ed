"""``surgeguard load``: flags and settings in, one run (or a tuning run) out.

Bad input ends with one line naming it (``SettingsError``, exit 2) before anything
starts; a run that started always writes its reports.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from surgeguard.settings import SettingsError
from surgeguard_loadtest import verdict
from surgeguard_loadtest.load import tune
from surgeguard_loadtest.load.options import LoadOptions
from surgeguard_loadtest.load.report import REPORT_HTML
from surgeguard_loadtest.load.run import LoadError, run_load
from surgeguard_loadtest.load.settings import LoadSettings
from surgeguard_loadtest.load.watch import Window
from surgeguard_loadtest.scenarios import ALL_SCENARIOS, ScenarioError, build
from surgeguard_loadtest.storm.phase import StormOptions


def _reachable(url: str) -> bool:
    try:
        httpx.get(f"{url.rstrip('/')}/healthz", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return False
    return True


def bare_keys(raw: str) -> list[str]:
    """The client keys of ``key[:ceiling],...`` without their priority ceilings."""
    return [k.split(":", 1)[0].strip() for k in raw.split(",") if k.split(":", 1)[0].strip()]


def _storm(args: argparse.Namespace, keys: list[str]) -> tuple[StormOptions, list[str]]:
    """The storm's options and the keys left for Locust's users: the storm takes one
    key (``--storm-key`` or the first), the users the others when there are others (so
    that the storm's client does not shed the polite users sharing its key)."""
    key = args.storm_key or (keys[0] if keys else "demo-key")
    others = [k for k in keys if k != key]
    storm = StormOptions(connections=args.storm_connections, threads=args.storm_threads, key=key)
    return storm, others or keys


def options(args: argparse.Namespace) -> LoadOptions:
    settings = LoadSettings.load(
        flags={"controller_url": "--controller"}, controller_url=args.controller
    )
    name = "step" if args.tune else args.scenario
    if name is None:
        raise SettingsError(f"give --scenario NAME ({', '.join(ALL_SCENARIOS)})")
    if args.tune and args.scenario not in ("step", None):
        raise SettingsError(f"--tune runs the step scenario, not {args.scenario}")
    if not args.host.startswith(("http://", "https://")):
        raise SettingsError(f"--host must be an http(s) URL, got {args.host!r}")
    if args.processes < 1:
        raise SettingsError(f"--processes must be >= 1, got {args.processes}")
    try:
        scenario = build(name, args.users, args.duration)
    except ScenarioError as exc:
        raise SettingsError(str(exc)) from None
    # The controller is required where the run acts through it (chaos, tuning); else
    # it is only told about the run (chart markers) when it is there to hear it.
    needs_controller = args.tune or bool(scenario.chaos)
    controller: str | None = settings.controller_url
    if not (needs_controller or args.controller) and (
        args.no_marks or not _reachable(settings.controller_url)
    ):
        controller = None
    keys = bare_keys(settings.client_keys)
    storm = StormOptions()
    if scenario.storm_s is not None:
        storm, keys = _storm(args, keys)
    return LoadOptions(
        scenario=scenario,
        host=args.host.rstrip("/"),
        out=args.out,
        controller_url=controller,
        admin_token=settings.admin_token,
        client_keys=",".join(keys),
        processes=args.processes,
        marks=not args.no_marks,
        drill_id=args.drill_id,
        storm=storm,
        slo_p99_ms=float(settings.slo_p99_ms),
    )


def run_load_command(args: argparse.Namespace) -> int:
    opts = options(args)
    s = opts.scenario
    print(
        f"load: {s.name}, up to {s.users:,} users for {s.duration_s:g} s against {opts.host}"
        f" -> {opts.out}",
        flush=True,
    )
    try:
        summary = run_load(opts)
    except LoadError as exc:
        raise SettingsError(str(exc)) from None
    print(_verdict(summary), flush=True)
    if "populations" in summary:
        print(_sides(summary["populations"]), flush=True)
    print(verdict.lines(summary), flush=True)
    if args.tune:
        tuned = tune.result(
            s,
            [Window(**w) for w in summary["windows"]],
            [(k.pop("at"), k) for k in (dict(k) for k in summary["knobs"])],
            slo_ms=opts.slo_p99_ms,
        )
        text = tune.report(tuned)
        (opts.out / "tune.json").write_text(json.dumps(tuned, indent=2))
        (opts.out / "tune.md").write_text("# Tuning run\n\n```\n" + text + "\n```\n")
        print(text, flush=True)
    print(
        f"reports: {opts.out}/summary.json, {opts.out}/{REPORT_HTML}, {opts.out}/report.html",
        flush=True,
    )
    return 0


def _verdict(summary: dict[str, Any]) -> str:
    """Three lines an operator reads first: what the service did, how its health
    check fared, what the generator managed."""
    server, health, gen = summary["server_side"], summary["healthz"], summary["generator"]
    rejected = sum(server.get("rejected", {}).values())
    return (
        f"server: admitted {server.get('admitted', 0):,}, rejected {rejected:,}, "
        f"5xx (not 503) {server.get('errors_5xx', 0):,}, deliberate 503 "
        f"{server.get('unavailable_503', 0):,}, p99 {server.get('p99_ms')} ms, "
        f"memory {server.get('rss_mb_start')} -> max {server.get('rss_mb_max')} MB\n"
        f"healthz: {health['probes']} probes, {health['failed']} failed, "
        f"p99 {health['p99_ms']} ms, max {health['max_ms']} ms\n"
        f"generator: peak {gen['users_peak']:,} users, {gen['rps_peak'] or 0:,.0f} req/s"
        + (" (its CPU was the limit)" if gen["cpu_saturated"] else "")
        + (" — stopped early" if summary["stopped_early"] else "")
    )


def _sides(populations: dict[str, Any]) -> str:
    """The polite users and the storm, one line each (client side)."""
    polite, storm = populations["polite"], populations["storm"]
    return (
        f"polite (Locust, {polite['users']:,} users): {polite['requests']:,} requests, "
        f"{polite['ok']:,} ok, {polite['shed']:,} shed, p99 {polite['p99_ms']} ms\n"
        f"storm (wrk, {storm['connections']:,} connections): {storm['requests']:,} requests, "
        f"{storm['ok']:,} ok, {storm['non_2xx_3xx']:,} non-2xx, p99 {storm['p99_ms']} ms"
    )
