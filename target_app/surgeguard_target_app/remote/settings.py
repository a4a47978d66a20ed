"""Settings of one remote API process (``surgeguard remote NAME``)."""

from __future__ import annotations

from pydantic import Field

from surgeguard.settings import SettingsBase
from surgeguard_target_app.remote.api import RemoteName
from surgeguard_target_app.settings import DEPENDENCY_DEFAULTS


class RemoteSettings(SettingsBase):
    """Capacity and latency per remote API (``SURGEGUARD_<NAME>_CAPACITY`` and
    ``_LATENCY_MS``, the variables a replica's simulated one reads), where it listens and
    which Redis holds the control document whose chaos it follows."""

    redis_url: str | None = Field(
        None, description="Redis holding the control plane (its chaos); unset: no chaos"
    )
    host: str = Field("127.0.0.1", description="interface to listen on")
    control_poll_ms: int = Field(
        500, ge=50, le=60_000, description="how often the control document is read, ms"
    )
    recommendations_capacity: int = Field(
        DEPENDENCY_DEFAULTS["recommendations"][0], ge=1, le=10_000
    )
    recommendations_latency_ms: float = Field(
        DEPENDENCY_DEFAULTS["recommendations"][1], gt=0.0, le=60_000
    )
    payments_capacity: int = Field(DEPENDENCY_DEFAULTS["payments"][0], ge=1, le=10_000)
    payments_latency_ms: float = Field(DEPENDENCY_DEFAULTS["payments"][1], gt=0.0, le=60_000)

    def dependency(self, name: RemoteName) -> tuple[int, float]:
        """(parallel slots, base latency in seconds) of the remote API ``name``."""
        capacity: int = getattr(self, f"{name}_capacity")
        latency_ms: float = getattr(self, f"{name}_latency_ms")
        return capacity, latency_ms / 1000.0
