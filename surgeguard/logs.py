"""One logging setup for every surgeguard process: a level name in every line, text or JSON.

The CLI resolves ``--log-level`` and ``--log-format`` (or ``SURGEGUARD_LOG_LEVEL`` and
``SURGEGUARD_LOG_FORMAT``) once with :func:`resolve` and calls :func:`setup` before it
starts anything; ``surgeguard up`` hands the same two flags to each of its children.
Lines go to stderr. JSON is one object per line: ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``message``, any ``extra=`` fields of the call, and ``exc`` for a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from surgeguard.settings import ENV_PREFIX, SettingsError

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
LEVEL_ENV = f"{ENV_PREFIX}LOG_LEVEL"
FORMAT_ENV = f"{ENV_PREFIX}LOG_FORMAT"

# Libraries that log a line per request or scrape at INFO: kept at WARNING and above.
CHATTY = ("httpx", "httpcore")

# Attributes every LogRecord has: anything else on a record came from ``extra=``
# (except uvicorn's coloured copy of its message).
_RECORD_FIELDS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
        "color_message",
    }
)


@dataclass(frozen=True)
class LogConfig:
    """``level``: one of LEVELS; ``format``: one of FORMATS."""

    level: str = "info"
    format: str = "text"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {self.format!r}")

    @property
    def level_number(self) -> int:
        number: int = logging.getLevelNamesMapping()[self.level.upper()]
        return number

    def argv(self) -> list[str]:
        """The flags that give a child process this same setup."""
        return ["--log-level", self.level, "--log-format", self.format]


def resolve(level: str | None, format: str | None, environ: Mapping[str, str]) -> LogConfig:
    """The setup from flags (when given) or the environment; defaults info and text.

    Raises ``SettingsError`` with one line naming the flag or variable and what it allows.
    """
    values: dict[str, str] = {}
    for field, flag, env, allowed, value in (
        ("level", "--log-level", LEVEL_ENV, LEVELS, level),
        ("format", "--log-format", FORMAT_ENV, FORMATS, format),
    ):
        source = flag if value is not None else env
        raw = value if value is not None else environ.get(env, "")
        if raw.strip() == "" and value is None:
            continue  # unset or empty variable: the default
        if raw.strip().lower() not in allowed:
            raise SettingsError(
                f"invalid setting {source}={raw!r}: must be one of {', '.join(allowed)}"
            )
        values[field] = raw.strip().lower()
    return LogConfig(**values)


class TextFormatter(logging.Formatter):
    """``2026-01-31 12:00:00.123 INFO logger: message key=value``"""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra(record)
        if not extra:
            return line
        head, sep, rest = line.partition("\n")  # extras before any traceback
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())
        return f"{head} {pairs}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (a traceback is a field, never a line of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that a second ``setup`` replaces it and leaves other handlers alone."""


def formatter(config: LogConfig) -> logging.Formatter:
    return JsonFormatter() if config.format == "json" else TextFormatter()


def setup(config: LogConfig | None = None, stream: IO[str] | None = None) -> None:
    """Route every logger of this process through one handler on ``stream`` (stderr)."""
    config = config or LogConfig()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(config))
    # On the handler too: a propagated record is not checked against the root's level.
    handler.setLevel(config.level_number)
    root.addHandler(handler)
    root.setLevel(config.level_number)
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, config.level_number))


def streamlit_env(config: LogConfig) -> dict[str, str]:
    """Streamlit's own logger settings for the dashboard's server process.

    Streamlit formats its lines itself from a ``%``-style template, so its JSON lines
    are that template: valid JSON unless a message holds a quote or a line break."""
    template = (
        '{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", '
        '"message": "%(message)s"}'
        if config.format == "json"
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return {"STREAMLIT_LOGGER_LEVEL": config.level, "STREAMLIT_LOGGER_MESSAGE_FORMAT": template}
