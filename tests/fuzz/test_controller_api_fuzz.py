"""The controller's API fuzzed with schemathesis (issue 13, "The operator API accepts
exactly what it documents"): a real controller (real uvicorn, real Redis) over a real
demo replica, over real HTTP, with the admin token on most requests.

For every generated request: no 5xx. For every write refused (4xx): nothing in Redis
changed (the control document, its version, the audit trail, the drills). Then the
inputs seen to go wrong by hand: non-ASCII bytes in ``Authorization`` and in other
headers, a 5 MiB body, and booleans, strings and fractions where a knob value or a
mode's ``active`` belongs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from fastapi import FastAPI
from hypothesis import strategies as st

from surgeguard.cli.wiring import drill_scenarios
from surgeguard.controlplane import CONTROL_KEY
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.lease import LEASE_KEY
from surgeguard_controller.loop import Controller
from surgeguard_controller.store import AUDIT_KEY
from tests.controller.conftest import AUTH, TOKEN, RunningController, StartController
from tests.fuzz.fuzzing import (
    HUGE_BODY,
    WRITE_METHODS,
    Answer,
    Case,
    Findings,
    changes,
    fuzz,
    operations,
    raw_request,
    request_head,
    snapshot,
)
from tests.support.processes import clean_env
from tests.target_app.conftest import StartTarget

FAKE_LOAD = Path(__file__).parent.parent / "controller" / "fake_load.py"
MAX_EXAMPLES = 15  # per operation
KNOB = "concurrency_limit"


def moving(key: str) -> bool:
    """Keys that change without an operator write: the controller's lease (renewed while
    it holds it), not operator state."""
    return key == LEASE_KEY


@dataclass
class Stack:
    controller: RunningController
    redis: redis.Redis


@pytest.fixture
def stack(
    start_target: StartTarget,
    start_controller: StartController,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Iterator[Stack]:
    """A demo replica and a controller that knows its catalogue (one tick). Its drills
    run the fake load generator (harmless: it only waits for its SIGTERM)."""
    target = start_target()
    runners: list[DrillRunner] = []

    def runner(controller: Controller) -> DrillRunner:
        runners.append(
            DrillRunner(
                controller.redis,
                target=target.url,
                out_root=tmp_path / "drills",
                admin_token=TOKEN,
                command=(sys.executable, str(FAKE_LOAD)),
                env=clean_env(FAKE_LOAD_SECONDS="600"),
                stop_timeout_s=5.0,
                poll_s=0.05,
            )
        )
        return runners[-1]

    ctl = start_controller([target.url], drills=runner)
    ctl.tick()
    try:
        yield Stack(ctl, redis_client)
    finally:
        for made in runners:
            process = made.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def openapi(stack: Stack) -> dict[str, Any]:
    """The controller app's schema, in-process (its URL is known only once it runs)."""
    app = stack.controller.server.config.app
    assert isinstance(app, FastAPI)
    return app.openapi()


def known_names(controller: Controller) -> dict[str, list[str]]:
    """What the replicas declare, by path parameter name."""
    catalogue = controller.catalogue
    return {
        "knob": list(catalogue.knob_specs),
        "mode": list(catalogue.modes),
        "dependency": list(catalogue.dependencies),
    }


REASONS = st.text(min_size=1, max_size=200)
# Writes the controller takes, beside the generated ones (random values are mostly out
# of range, random scenario names unknown).
BODIES = {
    "PUT /api/v1/knobs/{knob}": st.fixed_dictionaries(
        {"value": st.none() | st.integers(1, 200), "pin": st.none() | st.booleans()},
        optional={"reason": REASONS},
    ),
    "POST /api/v1/drills": st.fixed_dictionaries(
        {
            "scenario": st.sampled_from(sorted(drill_scenarios())),
            "users": st.none() | st.integers(1, 50),
            "duration_s": st.none() | st.floats(5, 600),
            "reason": REASONS,
        }
    ),
}


def test_no_generated_request_gets_a_5xx_and_a_refused_write_changes_nothing(
    stack: Stack,
) -> None:
    schema = openapi(stack)
    findings = Findings()
    before: dict[str, object] = {}

    def judge(case: Case, response: Answer) -> str | None:
        nonlocal before
        if response.status_code >= 500:
            return f"{response.status_code}: {response.text[:300]}"
        if case.method.upper() in WRITE_METHODS:
            after = snapshot(stack.redis, ignore=moving)
            changed = changes(before, after)
            before = after
            if 400 <= response.status_code < 500 and changed:
                return f"refused with {response.status_code} but changed {changed}"
        return None

    for operation in operations(schema):
        before = snapshot(stack.redis, ignore=moving)
        fuzz(
            operation,
            stack.controller.url,
            judge,
            findings,
            headers=AUTH,
            max_examples=MAX_EXAMPLES,
            path_parameters=known_names(stack.controller.controller),
            bodies=BODIES,
        )
    assert not findings.failures, findings.report()
    assert findings.statuses.get(200, 0) > 0 and findings.statuses.get(422, 0) > 0
    # Writes went through too, so the check above compared the document and the audit.
    assert {CONTROL_KEY, AUDIT_KEY} <= snapshot(stack.redis, ignore=moving).keys()


def test_without_the_token_no_generated_write_gets_through_or_changes_anything(
    stack: Stack,
) -> None:
    """Writes without a token: 401, then 429 once the address has failed too often."""
    schema = openapi(stack)
    findings = Findings()
    before = snapshot(stack.redis, ignore=moving)

    def judge(case: Case, response: Answer) -> str | None:
        if response.status_code not in (401, 429):
            return f"{response.status_code} without a token: {response.text[:300]}"
        changed = changes(before, snapshot(stack.redis, ignore=moving))
        return f"changed {changed}" if changed else None

    writes = [op for op in operations(schema) if op.method.upper() in WRITE_METHODS]
    assert writes
    for operation in writes:
        fuzz(
            operation,
            stack.controller.url,
            judge,
            findings,
            headers={},
            max_examples=4,
            path_parameters=known_names(stack.controller.controller),
        )
    assert not findings.failures, findings.report()
    assert findings.statuses.get(401, 0) > 0


# -- the inputs seen to go wrong ------------------------------------------------------------


def put(stack: Stack, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    head = request_head(
        "PUT",
        path,
        stack.controller.url,
        [(b"Content-Type", b"application/json"), *headers],
        content_length=len(body),
    )
    return raw_request(stack.controller.url, head, body).status


PIN = json.dumps({"value": 40, "pin": True, "reason": "fuzz"}).encode()
NON_ASCII_AUTHORIZATIONS = [
    b"Bearer \xc3\xa9\xff",  # issue 13: this answered 500
    b"Bearer " + TOKEN.encode() + b"\xe9",
    b"\xff\xfe\xfd",
    "Bearer jeton-d\u2019acc\u00e8s".encode(),
]
# Not values (issue 13: {"value": true, "pin": true} answered 200 and pinned the limit at 1).
NOT_VALUES: list[tuple[str, dict[str, object], str]] = [
    (f"/api/v1/knobs/{KNOB}", {"value": True, "pin": True}, "value"),
    (f"/api/v1/knobs/{KNOB}", {"value": False}, "value"),
    (f"/api/v1/knobs/{KNOB}", {"value": "41"}, "value"),
    (f"/api/v1/knobs/{KNOB}", {"value": 40.0}, "value"),
    (f"/api/v1/knobs/{KNOB}", {"value": 40.5}, "value"),
    (f"/api/v1/knobs/{KNOB}", {"value": 40, "pin": "yes"}, "pin"),
    (f"/api/v1/knobs/{KNOB}", {"value": 40, "pin": 1}, "pin"),
    ("/api/v1/modes/read_only", {"active": 1}, "active"),
    ("/api/v1/modes/read_only", {"active": "true"}, "active"),
    ("/api/v1/autopilot", {"enabled": 0}, "enabled"),
    ("/api/v1/autopilot", {"enabled": "off"}, "enabled"),
]


def test_a_non_ascii_authorization_is_401_and_changes_nothing(stack: Stack) -> None:
    before = snapshot(stack.redis, ignore=moving)
    for authorization in NON_ASCII_AUTHORIZATIONS:
        status = put(stack, f"/api/v1/knobs/{KNOB}", PIN, [(b"Authorization", authorization)])
        assert status == 401, f"Authorization: {authorization!r} answered {status}"
    assert changes(before, snapshot(stack.redis, ignore=moving)) == []


def test_non_ascii_bytes_in_other_headers_do_not_500(stack: Stack) -> None:
    junk = [(b"X-Request-Note", b"caf\xe9 \xff\xfe"), (b"User-Agent", b"\xc3\xa9t\xc3\xa9")]
    auth = [(b"Authorization", f"Bearer {TOKEN}".encode())]
    assert put(stack, f"/api/v1/knobs/{KNOB}", PIN, [*auth, *junk]) == 200
    head = request_head("GET", "/api/v1/state", stack.controller.url, junk)
    assert raw_request(stack.controller.url, head).status == 200


def test_a_huge_body_is_413_with_the_token_and_401_without_and_changes_nothing(
    stack: Stack,
) -> None:
    before = snapshot(stack.redis, ignore=moving)
    huge = b'{"value": 40, "reason": "' + b"x" * HUGE_BODY + b'"}'
    auth = [(b"Authorization", f"Bearer {TOKEN}".encode())]
    assert put(stack, f"/api/v1/knobs/{KNOB}", huge, auth) == 413
    assert put(stack, f"/api/v1/knobs/{KNOB}", huge, []) == 401  # the token is checked first
    assert changes(before, snapshot(stack.redis, ignore=moving)) == []


def test_booleans_strings_and_fractions_are_not_values_422_naming_the_field(
    stack: Stack,
) -> None:
    before = snapshot(stack.redis, ignore=moving)
    wrong = []
    for path, body, field in NOT_VALUES:
        sent = json.dumps({**body, "reason": "fuzz"})
        response = requests.put(
            stack.controller.url + path,
            data=sent,
            headers={**AUTH, "Content-Type": "application/json"},
            timeout=10,
        )
        if response.status_code != 422 or field not in response.json()["detail"]:
            wrong.append(f"PUT {path} {body}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert changes(before, snapshot(stack.redis, ignore=moving)) == []


SURROGATE = b'"\\ud800"'  # a lone surrogate: valid JSON text, not a Unicode string
# Found by fuzzing (issue 13): each answered 500, because the 422 echoes the input and
# the input cannot be written as JSON.
CANNOT_CARRY: list[tuple[str, str, bytes]] = [
    ("PUT", "/api/v1/modes/read_only", b'{"active": true, "reason": ' + SURROGATE + b"}"),
    ("PUT", f"/api/v1/knobs/{KNOB}", b'{"value": 5, "reason": ' + SURROGATE + b"}"),
    ("PUT", f"/api/v1/knobs/{KNOB}", b'{"value": ' + SURROGATE + b', "reason": "x"}'),
    ("PUT", "/api/v1/autopilot", b'{"enabled": true, "reason": ' + SURROGATE + b"}"),
    ("PUT", "/api/v1/chaos/db", b'{"error_rate": 0.1, "reason": ' + SURROGATE + b"}"),
    ("POST", "/api/v1/drills", b'{"scenario": ' + SURROGATE + b', "reason": "x"}'),
    ("POST", "/api/v1/drills/stop", b'{"reason": ' + SURROGATE + b"}"),
    ("POST", "/api/v1/drills/marks", b'{"event": ' + SURROGATE + b', "scenario": "step"}'),
]


def test_an_input_json_cannot_carry_is_a_422_not_a_500(stack: Stack) -> None:
    before = snapshot(stack.redis, ignore=moving)
    auth = [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"Content-Type", b"application/json")]
    wrong = []
    for method, path, body in CANNOT_CARRY:
        head = request_head(method, path, stack.controller.url, auth, content_length=len(body))
        answer = raw_request(stack.controller.url, head, body)
        if answer.status != 422:
            wrong.append(f"{method} {path} {body!r}: {answer.status} {answer.body[:200]!r}")
    assert not wrong, "\n".join(wrong)
    assert changes(before, snapshot(stack.redis, ignore=moving)) == []
