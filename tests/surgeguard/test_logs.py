"""One logging setup (issue 16): level names in every line, JSON that parses, one line per
bad value. Pure: the formatters and the handler write to a string buffer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from surgeguard import logs
from surgeguard.logs import LogConfig
from surgeguard.settings import SettingsError


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``logs.setup`` changes the root logger: put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in logs.CHATTY}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in chatty.items():
            logging.getLogger(name).setLevel(old)


def _lines(config: LogConfig, emit: object) -> list[str]:
    out = io.StringIO()
    logs.setup(config, stream=out)
    assert callable(emit)
    emit()
    return out.getvalue().splitlines()


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_parse_and_carry_time_level_logger_message_and_fields() -> None:
    log = logging.getLogger("surgeguard.test")

    def emit() -> None:
        log.info('control v%d: "quoted"\nand a second line', 7, extra={"replica": "r1", "n": 3})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("tick failed")

    lines = _lines(LogConfig(format="json"), emit)
    assert len(lines) == 2  # a newline in a message or a traceback stays inside its object
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "surgeguard.test"
    assert first["message"] == 'control v7: "quoted"\nand a second line'
    assert first["replica"] == "r1" and first["n"] == 3
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"]


@pytest.mark.usefixtures("restored_logging")
def test_text_lines_name_their_level_and_carry_fields() -> None:
    log = logging.getLogger("surgeguard.test")
    lines = _lines(LogConfig(), lambda: log.warning("slow", extra={"dependency": "db cache"}))
    [line] = lines
    assert " WARNING surgeguard.test: slow" in line
    assert line.endswith('dependency="db cache"')


@pytest.mark.usefixtures("restored_logging")
def test_warning_level_hides_info_and_chatty_libraries_stay_quiet() -> None:
    def emit() -> None:
        logging.getLogger("controller").info("hidden")
        logging.getLogger("controller").warning("shown")
        logging.getLogger("httpx").info("HTTP Request: GET /metrics")

    lines = _lines(LogConfig(level="warning"), emit)
    assert [line.split(": ", 1)[1] for line in lines] == ["shown"]
    debug = _lines(LogConfig(level="debug"), lambda: logging.getLogger("httpx").info("a scrape"))
    assert debug == []


@pytest.mark.usefixtures("restored_logging")
def test_a_second_setup_replaces_the_first_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup(LogConfig(), stream=first)
    logs.setup(LogConfig(format="json"), stream=second)
    logging.getLogger("x").warning("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"


def test_flags_win_over_the_environment_and_case_does_not_matter() -> None:
    env = {logs.LEVEL_ENV: "error", logs.FORMAT_ENV: "JSON"}
    assert logs.resolve(None, None, env) == LogConfig("error", "json")
    assert logs.resolve("Debug", "text", env) == LogConfig("debug", "text")
    assert logs.resolve(None, None, {logs.LEVEL_ENV: ""}) == LogConfig()


@pytest.mark.parametrize(
    ("level", "format", "env", "expected"),
    [
        ("loud", None, {}, "invalid setting --log-level='loud': must be one of debug, info,"),
        (None, None, {logs.LEVEL_ENV: "verbose"}, "SURGEGUARD_LOG_LEVEL='verbose'"),
        (None, "xml", {}, "invalid setting --log-format='xml': must be one of text, json"),
        (None, None, {logs.FORMAT_ENV: "yaml"}, "SURGEGUARD_LOG_FORMAT='yaml'"),
    ],
)
def test_a_bad_value_names_its_source_and_what_is_allowed(
    level: str | None, format: str | None, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        logs.resolve(level, format, env)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_child_gets_the_same_setup_as_flags() -> None:
    assert LogConfig("warning", "json").argv() == [
        "--log-level",
        "warning",
        "--log-format",
        "json",
    ]


def test_streamlit_gets_the_level_and_a_json_template() -> None:
    env = logs.streamlit_env(LogConfig("warning", "json"))
    assert env["STREAMLIT_LOGGER_LEVEL"] == "warning"
    line = env["STREAMLIT_LOGGER_MESSAGE_FORMAT"] % {
        "asctime": "2026-01-01 00:00:00,000",
        "levelname": "INFO",
        "name": "streamlit",
        "message": "ready",
    }
    assert json.loads(line)["level"] == "INFO"
