"""Settings of the demo's processes: a replica of the demo service (``DemoSettings``:
the library's replica settings plus the simulated dependencies and the job backlog
limit) and its job worker (``WorkerSettings``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from surgeguard.settings import ReplicaSettings, SettingsBase

DEMO_CLIENT_KEY = "demo-key"
# Keys the load generator spreads its users over by default (surgeguard_loadtest.keys
# holds the same list): one key for a whole Locust run would be one client, and the
# per-client share would shed it as such.
LOAD_CLIENT_KEYS: tuple[str, ...] = tuple(f"load-{n:02d}" for n in range(1, 17))

REMOTE_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")  # a remote API's base URL

# Simulated dependencies: (parallel slots, base latency in ms).
DEPENDENCY_DEFAULTS: dict[str, tuple[int, float]] = {
    "db": (8, 10.0),
    "cache": (32, 1.0),
    "recommendations": (4, 30.0),
    "payments": (4, 20.0),
}


class DemoSettings(ReplicaSettings):
    """A replica of the demo service."""

    redis_url: str | None = Field(
        None, description="Redis to use (jobs, cache, control plane); unset: the embedded one"
    )
    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis data directory")
    redis_fsync: Literal["everysec", "always"] = Field(
        "everysec",
        description="embedded Redis: sync its append-only file once a second (a machine "
        "crash may lose ~1 s of 202s) or before every reply (always: slower, loses nothing)",
    )
    client_keys: str = Field(
        ",".join(f"{key}:critical" for key in (DEMO_CLIENT_KEY, *LOAD_CLIENT_KEYS)),
        description="comma-separated client keys, each key[:ceiling] (critical|normal|"
        "sheddable: the highest priority it may use; a bare key: normal)",
    )

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

    database_url: str | None = Field(
        None,
        pattern=r"^((postgres|postgresql)://\S+)?$",
        description="the db as a real PostgreSQL server shared by every replica "
        "(postgresql://user:password@host:port/database); unset: simulated in this replica",
    )

    # -- remote APIs: set, that dependency is an HTTP service shared by every replica --
    recommendations_url: str | None = Field(
        None,
        description="recommendations service's base URL (surgeguard remote recommendations); "
        "unset: simulated in this replica",
    )
    payments_url: str | None = Field(
        None,
        description="payments service's base URL (surgeguard remote payments); "
        "unset: simulated in this replica",
    )
    remote_max_connections: int = Field(
        100, ge=1, le=10_000, description="connections one replica opens to each remote API"
    )

    job_backlog_limit: int = Field(
        10_000, ge=0, le=1_000_000_000, description="backlog (jobs) past which signups say so"
    )
    signup_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, le=366 * 24 * 3600, description="a signup's status kept, s"
    )
    idempotency_window_s: int = Field(
        24 * 3600, ge=1, le=366 * 24 * 3600, description="an Idempotency-Key is remembered, s"
    )
    analytics_maxlen: int = Field(
        100_000, ge=100, le=100_000_000, description="analytics events kept waiting (about)"
    )

    @field_validator("recommendations_url", "payments_url")
    @classmethod
    def _remote_url_is_http(cls, value: str | None) -> str | None:
        if value and not REMOTE_URL.match(value):
            raise ValueError(f"must be an http:// or https:// base URL, got {value!r}")
        return value

    def remote_url(self, name: str) -> str | None:
        """The base URL of dependency ``name`` when it is a remote API, else None."""
        if name not in ("recommendations", "payments"):
            return None
        url: str | None = getattr(self, f"{name}_url")
        return url or None

    def dependency(self, name: str) -> tuple[int, float]:
        """(parallel slots, base latency in seconds) of a simulated dependency."""
        if name not in DEPENDENCY_DEFAULTS:
            raise ValueError(f"unknown dependency {name!r}")
        capacity: int = getattr(self, f"{name}_capacity")
        latency_ms: float = getattr(self, f"{name}_latency_ms")
        return capacity, latency_ms / 1000.0


class WorkerSettings(SettingsBase):
    """The demo's job worker."""

    redis_url: str | None = Field(None, description="Redis holding the job streams")
    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis data directory")
    host: str = Field("127.0.0.1", description="interface to listen on")
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
    outbox_maxlen: int = Field(
        100_000, ge=100, le=100_000_000, description="delivered emails kept in the outbox (about)"
    )
    dead_letters_maxlen: int = Field(
        10_000, ge=100, le=100_000_000, description="dead letters kept (about)"
    )
    mailer_latency_ms: float = Field(5.0, ge=0.0, le=60_000, description="demo send time, ms")
    mailer_failure_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of demo sends that fail, 0..1"
    )
    mailer_poison_pattern: str = Field(
        "", description="regex: addresses it matches always fail (drills)"
    )
