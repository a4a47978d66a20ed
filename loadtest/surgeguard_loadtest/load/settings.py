"""Settings of a load run: the controller it marks drills on and the admin token for
its writes (everything else comes from its flags)."""

from __future__ import annotations

from pydantic import Field, field_validator

from surgeguard.settings import SettingsBase
from surgeguard_loadtest.keys import DEMO_CLIENT_KEY, LOAD_CLIENT_KEYS


class LoadSettings(SettingsBase):
    admin_token: str | None = Field(None, description="bearer token for operator writes")
    client_keys: str = Field(
        ",".join((DEMO_CLIENT_KEY, *LOAD_CLIENT_KEYS)),
        description="comma-separated client keys the users spread over (key[:ceiling])",
    )
    slo_p99_ms: int = Field(250, ge=1, le=60_000, description="admitted p99 latency SLO, ms")
    controller_url: str = Field(
        "http://127.0.0.1:8001", description="controller whose API the run marks itself on"
    )

    @field_validator("controller_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")
