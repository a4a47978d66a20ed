"""Settings of the controller process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from surgeguard.settings import SettingsBase


class ControllerSettings(SettingsBase):
    redis_url: str | None = Field(None, description="Redis to use; unset: start the embedded one")
    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis and drill records")
    host: str = Field("127.0.0.1", description="interface to listen on")
    admin_token: str | None = Field(None, description="bearer token for operator writes")
    slo_p99_ms: int = Field(250, ge=1, le=60_000, description="admitted p99 latency SLO, ms")

    # -- the control loop --
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

    @property
    def controller_target_list(self) -> list[str]:
        return [t.strip() for t in self.controller_targets.split(",") if t.strip()]

    @property
    def slo_seconds(self) -> float:
        return self.slo_p99_ms / 1000.0
