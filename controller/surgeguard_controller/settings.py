"""Settings of the controller process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from surgeguard.settings import ENV_PREFIX, SettingsBase, SettingsError
from surgeguard_controller.operators import check_tokens, parse_tokens


class ControllerSettings(SettingsBase):
    redis_url: str | None = Field(None, description="Redis to use; unset: start the embedded one")
    data_dir: Path = Field(Path(".surgeguard"), description="embedded Redis and drill records")
    host: str = Field("127.0.0.1", description="interface to listen on")
    admin_token: str | None = Field(
        None, description="bearer token of the operator named admin (at least 24 characters)"
    )
    admin_token_file: Path | None = Field(None, description="file holding admin_token")
    admin_tokens: str = Field(
        "", description="named operators: name:token,name:token (each at least 24 characters)"
    )
    admin_tokens_file: Path | None = Field(
        None, description="file of name:token lines (compose secrets)"
    )
    slo_p99_ms: int = Field(250, ge=1, le=60_000, description="admitted p99 latency SLO, ms")

    # -- the control loop --
    controller_port: int = Field(8001, ge=1, le=65535, description="controller API port")
    controller_targets: str = Field(
        "",
        description="comma-separated target replica URLs the controller tunes, besides "
        "the replicas that announce themselves in Redis (may be empty)",
    )
    controller_forget_after_ms: int = Field(
        5000,
        ge=100,
        le=3_600_000,
        description="an announced replica silent this long is forgotten, ms",
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

    @field_validator("controller_targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        for target in (t.strip() for t in value.split(",")):
            parts = urlsplit(target)
            if target and (parts.scheme not in ("http", "https") or not parts.netloc):
                raise ValueError(f"{target!r} is not an http(s) URL (http://host:port)")
        return value

    def operator_tokens(self) -> dict[str, str]:
        """Every operator's ``name -> token``, from the variables and files; raises
        ``SettingsError`` in one line (naming the setting, never a token's text)."""
        tokens: dict[str, str] = {}
        try:
            if self.admin_token and self.admin_token_file:
                raise ValueError(
                    f"{ENV_PREFIX}ADMIN_TOKEN and {ENV_PREFIX}ADMIN_TOKEN_FILE both name "
                    "the admin's token: give one"
                )
            groups: list[tuple[dict[str, str], str]] = []
            if self.admin_token_file:
                text = _read(self.admin_token_file, "ADMIN_TOKEN_FILE").strip()
                groups.append(({"admin": text}, f"{ENV_PREFIX}ADMIN_TOKEN_FILE"))
            elif self.admin_token:
                groups.append(({"admin": self.admin_token.strip()}, f"{ENV_PREFIX}ADMIN_TOKEN"))
            source = f"{ENV_PREFIX}ADMIN_TOKENS"
            groups.append((parse_tokens(self.admin_tokens, source), source))
            if self.admin_tokens_file:
                source = f"{ENV_PREFIX}ADMIN_TOKENS_FILE"
                text = _read(self.admin_tokens_file, "ADMIN_TOKENS_FILE")
                groups.append((parse_tokens(text, source), source))
            for group, source in groups:
                check_tokens(group, source)
                for name, token in group.items():
                    if name in tokens:
                        raise ValueError(f"{source}: operator {name!r} is named twice")
                    tokens[name] = token
            check_tokens(tokens, f"{ENV_PREFIX}ADMIN_TOKEN(S)")
        except ValueError as exc:
            raise SettingsError(f"invalid setting {exc}") from None
        return tokens

    @property
    def controller_target_list(self) -> list[str]:
        return [t.strip() for t in self.controller_targets.split(",") if t.strip()]

    @property
    def slo_seconds(self) -> float:
        return self.slo_p99_ms / 1000.0


def _read(path: Path, setting: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{ENV_PREFIX}{setting}={str(path)!r}: cannot read it ({exc})") from None
