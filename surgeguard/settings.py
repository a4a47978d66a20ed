"""Settings read from flags and ``SURGEGUARD_*`` variables: the base every process's
settings class derives from, and a protected replica's own (``ReplicaSettings``).

This is an edge: the only place that reads the environment. Anything invalid stops
start-up with one line naming the setting and what it allows (``SettingsError``).
Each process has its settings class next to it: the demo's replica and worker in
``surgeguard_target_app.settings``, the controller's and the dashboard's in their
packages; the stack runner combines them (``surgeguard.cli.settings``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from surgeguard.client_keys import ClientKeys
from surgeguard.declaration import DEPENDENCY_NAME
from surgeguard.fleet import check_advertise_url, default_advertise_url
from surgeguard.inner.algorithms import InnerAlgorithm, build_algorithm, parse_params
from surgeguard.knobs import DOOR_KNOB_SPECS
from surgeguard.modes import MODE_NAME, split_modes

ENV_PREFIX = "SURGEGUARD_"


class SettingsError(ValueError):
    """One line naming the bad setting and what it allows."""


class SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    @classmethod
    def load(cls, flags: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from the environment with ``overrides`` (CLI flags) on top.
        Flags left at None are not overrides. ``flags`` names the flag of a field when
        it is not ``--field-name``. Raises ``SettingsError``."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_one_line(cls, exc, given, flags or {})) from None


class DataSettings(SettingsBase):
    """Where a process keeps its data (``surgeguard redis``, ``surgeguard status``)."""

    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis data directory")
    redis_fsync: Literal["everysec", "always"] = Field(
        "everysec",
        description="embedded Redis: sync its append-only file once a second or "
        "before every reply (always: a machine crash loses no acknowledged write)",
    )


def _knob_field(name: str) -> Any:
    """A settings field for a knob's start-up value, bounded by the knob's own spec."""
    spec = DOOR_KNOB_SPECS[name]
    return Field(spec.default, ge=spec.minimum, le=spec.maximum, description=spec.description)


class ReplicaSettings(SettingsBase):
    """What one protected replica is told at start (``surgeguard.protect`` reads it)."""

    # -- where things are --
    redis_url: str | None = Field(
        None, description="Redis holding the control plane; unset: the knobs stay static"
    )
    host: str = Field("127.0.0.1", description="interface to listen on")
    replica_id: str = Field("", description="name of this replica (default host:port)")
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="also answer /healthz and /metrics on this port, from a thread of "
        "their own (probes and scrapes then never wait behind a storm; 0: any free port)",
    )
    advertise_url: str | None = Field(
        None,
        description="base URL the controller scrapes (<url>/metrics), announced in Redis "
        "so the controller finds this replica; unset: not announced",
    )
    announce_interval_ms: int = Field(
        1000, ge=100, le=60_000, description="how often the replica announces itself, ms"
    )

    # -- who may do what --
    client_keys: str = Field(
        "",
        description="comma-separated client keys, each key[:ceiling] (critical|normal|"
        "sheddable: the highest priority it may use; a bare key: normal); empty: no key "
        "is asked for at the door",
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

    # -- the inner loop (surgeguard.inner): a fast limit under the controller's knob --
    inner_loop: Literal["off", "aimd", "netflix-aimd", "vegas", "envoy-gradient", "gradient2"] = (
        Field(
            "off",
            description="the per-replica limit algorithm run every window under the "
            "concurrency_limit knob (off: the knob is the limit)",
        )
    )
    inner_window_ms: int = Field(
        100, ge=10, le=10_000, description="how often the inner loop moves the limit, ms"
    )
    inner_headroom: float = Field(
        0.2,
        ge=0.0,
        le=0.5,
        description="the aimd inner loop steers each window's p90 under the SLO less "
        "this share (the controller's default headroom)",
    )
    inner_params: str = Field(
        "",
        description="the inner loop algorithm's parameters, name=value,... "
        "(timeout_s=0.25,backoff=0.9; surgeguard.inner.algorithms); empty: its defaults",
    )

    # -- request edges and bulkheads --
    max_body_bytes: int = Field(64 * 1024, ge=64, le=16 * 1024 * 1024)
    body_timeout_ms: int = Field(
        10_000, ge=100, le=600_000, description="longest time for a request body to arrive, ms"
    )
    bulkhead_max_wait_ms: int = Field(
        50, ge=0, le=60_000, description="longest wait for a bulkhead slot, ms"
    )
    dependency_timeout_ms: int = Field(
        2_000, ge=1, le=600_000, description="a dependency call is cut off after, ms"
    )
    budgets: str = Field(
        "",
        description="comma-separated dependency:total, the calls in flight each shared "
        "dependency honours across ALL replicas (db:24,payments:8); sets or overrides "
        "the declared budget; empty: the declared ones",
    )

    @field_validator("client_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        if value.strip():  # empty: no key is asked for at the door
            ClientKeys.parse(value)  # ClientKeyError (a ValueError) names the bad entry
        return value

    @field_validator("advertise_url")
    @classmethod
    def _advertise_url(cls, value: str | None) -> str | None:
        return check_advertise_url(value) if value is not None else None

    @field_validator("budgets")
    @classmethod
    def _budgets_parse(cls, value: str) -> str:
        parse_budgets(value)  # which dependencies exist is the app's (surgeguard.protect)
        return value

    @field_validator("modes")
    @classmethod
    def _mode_names(cls, value: str) -> str:
        # Which modes exist is the app's declaration; surgeguard.protect checks that.
        for name in split_modes(value):
            if not MODE_NAME.match(name):
                raise ValueError(f"{name!r} is not a mode name")
        return value

    @model_validator(mode="after")
    def _inner_params(self) -> Self:
        if self.inner_loop != "off" or self.inner_params.strip():
            self.inner_algorithm()  # a ValueError names the bad parameter
        return self

    @model_validator(mode="after")
    def _retry_range(self) -> Self:
        if self.retry_after_min_s > self.retry_after_max_s:
            raise ValueError(
                f"retry_after_min_s ({self.retry_after_min_s}) must be <= "
                f"retry_after_max_s ({self.retry_after_max_s})"
            )
        return self

    # -- derived views --

    @property
    def client_key_set(self) -> frozenset[str]:
        keys = self.client_key_ceilings
        return keys.names if keys is not None else frozenset()

    @property
    def client_key_ceilings(self) -> ClientKeys | None:
        """The keys and their ceilings; None when no key is asked for."""
        return ClientKeys.parse(self.client_keys) if self.client_keys.strip() else None

    @property
    def budget_totals(self) -> dict[str, int]:
        """``budgets`` as dependency -> total calls across all replicas."""
        return parse_budgets(self.budgets)

    @property
    def mode_names(self) -> list[str]:
        return split_modes(self.modes)

    @property
    def slo_seconds(self) -> float:
        return self.slo_p99_ms / 1000.0

    def inner_algorithm(self) -> InnerAlgorithm | None:
        """The inner loop's algorithm as set (None: off); raises ``ValueError``."""
        params = parse_params(self.inner_params)
        if self.inner_loop == "off":
            if params:
                raise ValueError("inner_params are set but inner_loop is off")
            return None
        target = self.slo_seconds * (1.0 - self.inner_headroom)
        return build_algorithm(self.inner_loop, params, target_s=target)

    def initial_door_knobs(self) -> dict[str, int]:
        return {
            "concurrency_limit": self.concurrency_limit,
            "queue_limit": self.queue_limit,
            "queue_timeout_ms": self.queue_timeout_ms,
        }

    def advertised(self, port: int) -> Self:
        """These settings announcing ``http://host:port`` (``default_advertise_url``)
        when they name no URL of their own."""
        if self.advertise_url is not None:
            return self
        return self.model_copy(update={"advertise_url": default_advertise_url(self.host, port)})

    def replica_name(self, port: int) -> str:
        return self.replica_id or f"{socket.gethostname()}:{port}"


def parse_budgets(text: str) -> dict[str, int]:
    """``"db:24,payments:8"`` as ``{"db": 24, "payments": 8}``; raises ``ValueError``
    naming the bad entry."""
    totals: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, total = (part.strip() for part in entry.partition(":"))
        if not sep or not DEPENDENCY_NAME.match(name):
            raise ValueError(f"{entry!r} is not dependency:total (db:24)")
        if name in totals:
            raise ValueError(f"{name!r} is given twice")
        if not total.isdigit() or int(total) < 1:
            raise ValueError(f"{name}: the total must be an integer >= 1, got {total!r}")
        totals[name] = int(total)
    return totals


def _one_line(
    cls: type[BaseSettings], exc: ValidationError, given: dict[str, Any], flags: Mapping[str, str]
) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    flag = flags.get(field, f"--{field.replace('_', '-')}")
    source = flag if field in given else f"{ENV_PREFIX}{field.upper()}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if field:
        return f"invalid setting {source}={error.get('input')!r}: {message}{_allowed(cls, field)}"
    return f"invalid settings: {message}"


def _allowed(cls: type[BaseSettings], field: str) -> str:
    """ " (allowed: [low, high])" from the field's bounds, when it has both."""
    info = cls.model_fields.get(field)
    if info is None:
        return ""
    low = high = None
    for rule in info.metadata:
        low = getattr(rule, "ge", None) if getattr(rule, "ge", None) is not None else low
        high = getattr(rule, "le", None) if getattr(rule, "le", None) is not None else high
    return f" (allowed: [{low}, {high}])" if low is not None and high is not None else ""
