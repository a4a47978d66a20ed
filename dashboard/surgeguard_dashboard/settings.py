"""Settings of the dashboard process."""

from __future__ import annotations

from pydantic import Field, field_validator

from surgeguard.settings import SettingsBase


class DashboardSettings(SettingsBase):
    host: str = Field("127.0.0.1", description="interface to listen on")

    # -- where it reads and acts --
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
