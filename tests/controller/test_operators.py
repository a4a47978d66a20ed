"""Issue 13, "the operator API accepts exactly what it documents", on a real controller
(real uvicorn, real Redis, a real replica): values that are not integers, an
Authorization header of any bytes, bodies too large (refused before they are read, and
an unauthenticated one before anything), named operators in the audit, failed attempts
rate limited and counted, and a write whose audit entry cannot be stored not stored
either. Every rejected write leaves the control document's version as it was."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from surgeguard.controlplane import CONTROL_KEY
from surgeguard.settings import SettingsError
from surgeguard_controller.operators import FailedAttempts, Operators
from surgeguard_controller.settings import ControllerSettings
from surgeguard_controller.store import AUDIT_KEY
from tests.controller.conftest import AUTH, StartController
from tests.support.clock import FakeClock
from tests.target_app.conftest import StartTarget

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdefgh"


def _version(redis_client: redis.Redis) -> int:
    raw = redis_client.get(CONTROL_KEY)
    return 0 if raw is None else int(json.loads(raw)["version"])


NOT_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/knobs/concurrency_limit", {"value": True, "pin": True, "reason": "x"}, "value"),
    ("/api/v1/knobs/concurrency_limit", {"value": "41", "reason": "x"}, "value"),
    ("/api/v1/knobs/concurrency_limit", {"value": 40.0, "reason": "x"}, "value"),
    ("/api/v1/knobs/concurrency_limit", {"value": 40, "pin": 1, "reason": "x"}, "pin"),
    ("/api/v1/modes/read_only", {"active": 1, "reason": "x"}, "active"),
    ("/api/v1/autopilot", {"enabled": "false", "reason": "x"}, "enabled"),
    ("/api/v1/chaos/db", {"latency_multiplier": "5", "reason": "x"}, "latency_multiplier"),
]


def test_booleans_strings_and_fractions_are_not_values_and_change_nothing(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    before = _version(redis_client)
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        for path, body, field in NOT_VALUES:
            r = client.put(path, json=body, headers=AUTH)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["detail"].startswith(f"{field}: "), (body, r.json()["detail"])
        assert client.get("/api/v1/audit").json() == []
    assert _version(redis_client) == before


def test_an_authorization_header_of_non_ascii_bytes_is_401_and_changes_nothing(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    before = _version(redis_client)
    for token in (b"Bearer \xff\xfe\xc3\xa9t\xc3\xa9", b"\xe2\x82\xac", b"Bearer " + b"\xe9" * 28):
        r = httpx.put(
            f"{ctl.url}/api/v1/autopilot",
            json={"enabled": False, "reason": "x"},
            headers={"Authorization": token},
            timeout=10,
        )
        assert r.status_code == 401, r.text
    assert _version(redis_client) == before
    assert httpx.get(f"{ctl.url}/api/v1/audit", timeout=10).json() == []


def _raw_put(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A PUT that declares a 50 MB body and sends none of it: the answer comes only if
    the server refuses without reading the body (else the read times out)."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    lines = [
        "PUT /api/v1/autopilot HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Content-Length: 50000000",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection((host, port or 80), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_huge_body_is_refused_before_it_is_read_and_the_token_is_checked_first(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    before = _version(redis_client)
    assert _raw_put(ctl.url, {})[0] == 401  # no token: refused first, body unread
    assert _raw_put(ctl.url, {"Authorization": "Bearer wrong"})[0] == 401
    assert _raw_put(ctl.url, AUTH)[0] == 413  # the right token: too large, still unread

    def streamed() -> Any:  # chunked: no Content-Length to refuse it by
        yield b'{"enabled": false, "reason": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.put(f"{ctl.url}/api/v1/autopilot", content=streamed(), headers=AUTH, timeout=10)
    assert r.status_code == 413
    assert _version(redis_client) == before
    assert httpx.get(f"{ctl.url}/api/v1/audit", timeout=10).json() == []


def test_named_operators_are_audited_by_name(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url], operators=Operators({"alice": ALICE, "bob": BOB}))
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        for token, enabled in ((ALICE, False), (BOB, True)):
            r = client.put(
                "/api/v1/autopilot",
                json={"enabled": enabled, "reason": "handover"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
        audit = client.get("/api/v1/audit").json()
    assert [(a["who"], a["new"]) for a in audit] == [("bob", True), ("alice", False)]


def test_failed_attempts_are_rate_limited_per_address_and_counted(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    body = {"enabled": False, "reason": "x"}
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        for _ in range(10):
            wrong = {"Authorization": "Bearer guess"}
            assert client.put("/api/v1/autopilot", json=body, headers=wrong).status_code == 401
        locked = client.put("/api/v1/autopilot", json=body, headers=AUTH)
        assert locked.status_code == 429, locked.text  # even the right token, for now
        assert 1 <= int(locked.headers["Retry-After"]) <= 60
        metrics = client.get("/metrics").text
    assert "surgeguard_controller_auth_failures_total 10.0" in metrics
    assert _version(redis_client) == 0


def test_failed_attempts_lock_out_for_the_window_only() -> None:
    clock = FakeClock()
    attempts = FailedAttempts(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert attempts.retry_after("10.0.0.1") is None
        attempts.failed("10.0.0.1")
        clock.advance(1)
    assert attempts.retry_after("10.0.0.1") == pytest.approx(57)
    assert attempts.retry_after("10.0.0.2") is None  # per address
    clock.advance(57)
    assert attempts.retry_after("10.0.0.1") is None


def test_tokens_compare_as_bytes_and_name_their_operator() -> None:
    operators = Operators({"alice": ALICE, "bob": BOB})
    assert operators.name_of(BOB.encode()) == "bob"
    assert operators.name_of(b"\xff" * 28) is None
    assert operators.name_of(b"") is None


def test_a_write_whose_audit_entry_cannot_be_stored_is_not_stored_either(
    redis_client: redis.Redis, start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        assert client.put(
            "/api/v1/modes/read_only", json={"active": True, "reason": "x"}, headers=AUTH
        ).is_success
        before = redis_client.get(CONTROL_KEY)
        redis_client.delete(AUDIT_KEY)
        redis_client.set(AUDIT_KEY, "not a list")  # the audit cannot be written now
        r = client.put(
            "/api/v1/knobs/concurrency_limit",
            json={"value": 12, "pin": True, "reason": "x"},
            headers=AUTH,
        )
        assert r.status_code == 503 and "nothing was changed" in r.json()["detail"], r.text
    assert redis_client.get(CONTROL_KEY) == before


# -- tokens from settings ---------------------------------------------------------------


def test_tokens_come_from_variables_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "admin").write_text(ALICE + "\n")
    (tmp_path / "team").write_text(f"# the on-call team\ncarol:{BOB}\n")
    monkeypatch.setenv("SURGEGUARD_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("SURGEGUARD_ADMIN_TOKENS", "dave:dave-token-0123456789abcdef")
    monkeypatch.setenv("SURGEGUARD_ADMIN_TOKENS_FILE", str(tmp_path / "team"))
    assert ControllerSettings.load().operator_tokens() == {
        "admin": ALICE,
        "dave": "dave-token-0123456789abcdef",
        "carol": BOB,
    }


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SURGEGUARD_ADMIN_TOKEN": "short-secret"}, "SURGEGUARD_ADMIN_TOKEN: the token of"),
        ({"SURGEGUARD_ADMIN_TOKENS": f"alice:{ALICE},bob:tiny"}, "operator 'bob' is 4"),
        ({"SURGEGUARD_ADMIN_TOKENS": f"alice:{ALICE},bob:{ALICE}"}, "share a token"),
        ({"SURGEGUARD_ADMIN_TOKENS": ALICE}, "each entry must be name:token"),
    ],
)
def test_a_bad_token_is_refused_in_one_line_that_does_not_show_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        ControllerSettings.load().operator_tokens()
    text = str(refused.value)
    assert says in text and "\n" not in text
    assert "short-secret" not in text and "tiny" not in text and ALICE not in text


def test_the_controller_refuses_to_start_with_a_short_token() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "surgeguard", "controller", "--target", "http://127.0.0.1:9"],
        env={"PATH": "/usr/bin:/bin", "SURGEGUARD_ADMIN_TOKEN": "too-short"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "SURGEGUARD_ADMIN_TOKEN: the token of operator 'admin' is 9 characters" in line
    assert "at least 24" in line and "too-short" not in line
