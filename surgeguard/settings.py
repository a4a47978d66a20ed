"""Settings of every surgeguard process, read from flags and ``SURGEGUARD_*`` variables.

This is an edge: the only place that reads the environment. Anything invalid stops
start-up with one line naming the setting and what it allows (``SettingsError``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from surgeguard.client_keys import ClientKeys
from surgeguard.knobs import DEPENDENCIES, KNOB_SPECS, KnobError, Knobs
from surgeguard.modes import Mode, parse_modes

ENV_PREFIX = "SURGEGUARD_"
DEMO_CLIENT_KEY = "demo-key"
# Keys the load generator spreads its users over by default: one key for a whole
# Locust run would be one client, and the per-client share would shed it as such.
LOAD_CLIENT_KEYS: tuple[str, ...] = tuple(f"load-{n:02d}" for n in range(1, 17))

# Simulated dependencies: (parallel slots, base latency in ms).
DEPENDENCY_DEFAULTS: dict[str, tuple[int, float]] = {
    "db": (8, 10.0),
    "cache": (32, 1.0),
    "recommendations": (4, 30.0),
    "payments": (4, 20.0),
}


class SettingsError(ValueError):
    """One line naming the bad setting and what it allows."""


def _knob_field(name: str) -> Any:
    """A settings field for a knob's start-up value, bounded by the knob's own spec."""
    spec = KNOB_SPECS[name]
    return Field(spec.default, ge=spec.minimum, le=spec.maximum, description=spec.description)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # -- where things are --
    redis_url: str | None = Field(None, description="Redis to use; unset: start the embedded one")
    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis data directory")
    host: str = Field("127.0.0.1", description="interface to listen on")
    replica_id: str = Field("", description="name of this replica (default host:port)")
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="also answer /healthz and /metrics on this port, from a thread of "
        "their own (probes and scrapes then never wait behind a storm; 0: any free port)",
    )

    # -- who may do what --
    admin_token: str | None = Field(None, description="bearer token for operator writes")
    client_keys: str = Field(
        ",".join(f"{key}:critical" for key in (DEMO_CLIENT_KEY, *LOAD_CLIENT_KEYS)),
        description="comma-separated client keys, each key[:ceiling] (critical|normal|"
        "sheddable: the highest priority it may use; a bare key: normal)",
    )
    client_address_header: str = Field(
        "",
        description="identify a client by this header (a trusted proxy's X-Real-IP) "
        "instead of its TCP connection; empty: the connection",
    )

    # -- clients that ignore Retry-After --
    penalty_box: bool = Field(
        True, description="hold requests that come back before their Retry-After"
    )
    penalty_max_held: int = Field(
        16_384, ge=0, le=1_000_000, description="most requests held at once (then 429 + close)"
    )
    penalty_max_retry_after_s: int = Field(
        30, ge=1, le=3600, description="longest Retry-After given to a repeat offender, s"
    )

    # -- the objective --
    slo_p99_ms: int = Field(250, ge=1, le=60_000, description="admitted p99 latency SLO, ms")

    # -- initial knobs (the control plane may change them at run time) --
    concurrency_limit: int = _knob_field("concurrency_limit")
    queue_limit: int = _knob_field("queue_limit")
    queue_timeout_ms: int = _knob_field("queue_timeout_ms")
    modes: str = Field("", description="comma-separated degradation modes on at start")
    no_admission: bool = Field(False, description="admission middleware off (cost measurement)")
    client_share: float = Field(
        0.5, gt=0.0, le=1.0, description="largest share of the limit one client may hold"
    )
    retry_after_min_s: int = Field(1, ge=0, le=3600)
    retry_after_max_s: int = Field(3, ge=0, le=3600)
    control_poll_ms: int = Field(
        500, ge=50, le=60_000, description="control-plane polling fallback period, ms"
    )

    # -- request edges --
    max_body_bytes: int = Field(64 * 1024, ge=64, le=16 * 1024 * 1024)

    # -- simulated dependencies and their bulkheads --
    db_capacity: int = Field(DEPENDENCY_DEFAULTS["db"][0], ge=1, le=10_000)
    db_latency_ms: float = Field(DEPENDENCY_DEFAULTS["db"][1], ge=0.0, le=60_000)
    cache_capacity: int = Field(DEPENDENCY_DEFAULTS["cache"][0], ge=1, le=10_000)
    cache_latency_ms: float = Field(DEPENDENCY_DEFAULTS["cache"][1], ge=0.0, le=60_000)
    recommendations_capacity: int = Field(
        DEPENDENCY_DEFAULTS["recommendations"][0], ge=1, le=10_000
    )
    recommendations_latency_ms: float = Field(
        DEPENDENCY_DEFAULTS["recommendations"][1], ge=0.0, le=60_000
    )
    payments_capacity: int = Field(DEPENDENCY_DEFAULTS["payments"][0], ge=1, le=10_000)
    payments_latency_ms: float = Field(DEPENDENCY_DEFAULTS["payments"][1], ge=0.0, le=60_000)
    bulkhead_max_wait_ms: int = Field(
        50, ge=0, le=60_000, description="longest wait for a bulkhead slot, ms"
    )
    dependency_timeout_ms: int = Field(
        2_000, ge=1, le=600_000, description="a dependency call is cut off after, ms"
    )

    # -- deferred work: the worker and its jobs --
    worker_id: str = Field("", description="consumer name of this worker (default host-pid)")
    worker_concurrency: int = Field(
        64, ge=1, le=10_000, description="jobs one worker process runs at once"
    )
    worker_metrics_port: int = Field(
        8002, ge=0, le=65535, description="worker /metrics port (0: any free port)"
    )
    worker_shutdown_timeout_ms: int = Field(
        5_000, ge=0, le=600_000, description="on SIGTERM, longest wait for running jobs, ms"
    )
    job_max_attempts: int = Field(
        5, ge=1, le=100, description="attempts before a job goes to the dead letters"
    )
    job_backoff_base_ms: int = Field(
        200, ge=1, le=3_600_000, description="retry delay after the first failure, ms"
    )
    job_backoff_max_ms: int = Field(
        60_000, ge=1, le=86_400_000, description="longest retry delay, ms"
    )
    job_timeout_ms: int = Field(
        10_000, ge=1, le=3_600_000, description="a job's run is cut off after, ms"
    )
    job_reclaim_idle_ms: int = Field(
        30_000,
        ge=10,
        le=86_400_000,
        description="a job held this long by a silent worker is taken over, ms",
    )
    job_backlog_limit: int = Field(
        10_000, ge=0, le=1_000_000_000, description="backlog (jobs) past which signups say so"
    )
    mailer_latency_ms: float = Field(5.0, ge=0.0, le=60_000, description="demo send time, ms")
    mailer_failure_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of demo sends that fail, 0..1"
    )
    mailer_poison_pattern: str = Field(
        "", description="regex: addresses it matches always fail (drills)"
    )

    # -- the controller --
    controller_port: int = Field(8001, ge=1, le=65535, description="controller API port")
    controller_targets: str = Field(
        "", description="comma-separated target replica URLs the controller tunes"
    )
    controller_tick_ms: int = Field(1000, ge=50, le=60_000, description="control tick, ms")
    controller_algorithm: Literal["aimd", "static", "gradient"] = Field(
        "aimd", description="limit algorithm"
    )
    controller_scope: Literal["replica", "global"] = Field(
        "replica", description="tune each replica from its own signals, or all as one"
    )
    auto_degrade: bool = Field(False, description="controller may switch degradation modes")
    controller_hold_rule: bool = Field(
        True,
        description="cut a knob only with evidence that it causes the latency "
        "(false: cut as before the hold rule, for side-by-side benchmarks)",
    )
    prometheus_url: str | None = Field(
        None, description="read signals from this Prometheus instead of scraping replicas"
    )

    # -- the dashboard --
    controller_url: str = Field(
        "http://127.0.0.1:8001", description="controller the dashboard reads and acts through"
    )
    dashboard_port: int = Field(8501, ge=1, le=65535, description="dashboard port")
    dashboard_refresh_ms: int = Field(
        2000, ge=500, le=60_000, description="dashboard live-refresh period, ms"
    )

    @field_validator("controller_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("client_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        ClientKeys.parse(value)  # ClientKeyError (a ValueError) names the bad entry
        return value

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, value: str) -> str:
        parse_modes([m.strip() for m in value.split(",") if m.strip()])
        return value

    @model_validator(mode="after")
    def _retry_range(self) -> Settings:
        if self.retry_after_min_s > self.retry_after_max_s:
            raise ValueError(
                f"retry_after_min_s ({self.retry_after_min_s}) must be <= "
                f"retry_after_max_s ({self.retry_after_max_s})"
            )
        return self

    # -- derived views --

    @property
    def client_key_set(self) -> frozenset[str]:
        return self.client_key_ceilings.names

    @property
    def client_key_ceilings(self) -> ClientKeys:
        return ClientKeys.parse(self.client_keys)

    @property
    def mode_set(self) -> frozenset[Mode]:
        return parse_modes([m.strip() for m in self.modes.split(",") if m.strip()])

    @property
    def controller_target_list(self) -> list[str]:
        return [t.strip() for t in self.controller_targets.split(",") if t.strip()]

    @property
    def slo_seconds(self) -> float:
        return self.slo_p99_ms / 1000.0

    def initial_knobs(self) -> Knobs:
        return Knobs.build(
            {
                "concurrency_limit": self.concurrency_limit,
                "queue_limit": self.queue_limit,
                "queue_timeout_ms": self.queue_timeout_ms,
            }
        )

    def dependency(self, name: str) -> tuple[int, float]:
        """(parallel slots, base latency in seconds) of a simulated dependency."""
        if name not in DEPENDENCIES:
            raise KnobError(f"unknown dependency {name!r}")
        capacity: int = getattr(self, f"{name}_capacity")
        latency_ms: float = getattr(self, f"{name}_latency_ms")
        return capacity, latency_ms / 1000.0

    def replica_name(self, port: int) -> str:
        return self.replica_id or f"{socket.gethostname()}:{port}"


def load_settings(flags: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment with ``overrides`` (CLI flags) on top.
    Flags left at None are not overrides. ``flags`` names the flag of a field when it
    is not ``--field-name``. Raises ``SettingsError``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, given, flags or {})) from None


def _one_line(exc: ValidationError, given: dict[str, Any], flags: Mapping[str, str]) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    flag = flags.get(field, f"--{field.replace('_', '-')}")
    source = flag if field in given else f"{ENV_PREFIX}{field.upper()}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if field:
        return f"invalid setting {source}={error.get('input')!r}: {message}{_allowed(field)}"
    return f"invalid settings: {message}"


def _allowed(field: str) -> str:
    """ " (allowed: [low, high])" from the field's bounds, when it has both."""
    info = Settings.model_fields.get(field)
    if info is None:
        return ""
    low = high = None
    for rule in info.metadata:
        low = getattr(rule, "ge", None) if getattr(rule, "ge", None) is not None else low
        high = getattr(rule, "le", None) if getattr(rule, "le", None) is not None else high
    return f" (allowed: [{low}, {high}])" if low is not None and high is not None else ""
