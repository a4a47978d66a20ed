"""The demo's routes fuzzed with schemathesis (issue 13): a real replica (real uvicorn,
real Redis, the door in front), over real HTTP, with the demo's client key on every
generated request.

No 5xx, except a deliberate 503 (``read_only``, a full bulkhead, a dependency or Redis
unavailable), which always carries ``Retry-After``. A write refused (4xx) stores
nothing. Then by hand: bodies past the limit get 413 whether their size is declared
or not, and non-ASCII bytes in headers are a 4xx or are ignored, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from hypothesis import strategies as st

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
from tests.target_app.conftest import API_KEY, SIGNUP, RunningTarget, StartTarget

MAX_EXAMPLES = 15  # per operation
# The simulated dependencies answer almost at once: the fuzz is about answers, not latency.
FAST = {f"{d}_latency_ms": 0.1 for d in ("db", "cache", "recommendations", "payments")}


def stored(key: str) -> bool:
    """Everything the replica keeps in Redis counts (nothing changes on its own)."""
    return False


def deliberate(response: Answer) -> bool:
    """A 503 the service means (it says when to come back)."""
    return response.status_code == 503 and "retry-after" in {k.lower() for k in response.headers}


# Signups the demo takes, beside the generated ones (whose emails rarely look like one).
BODIES = {
    "POST /signup": st.fixed_dictionaries(
        {"email": st.emails(), "name": st.text(min_size=1, max_size=100)}
    ),
}


@dataclass
class Replica:
    target: RunningTarget
    redis: redis.Redis


@pytest.fixture
def replica(start_target: StartTarget, redis_client: redis.Redis) -> Iterator[Replica]:
    yield Replica(start_target(**FAST), redis_client)


def test_no_generated_request_gets_a_5xx_unless_a_deliberate_503(replica: Replica) -> None:
    schema = replica.target.service.api.openapi()
    findings = Findings()
    before: dict[str, object] = {}

    def judge(case: Case, response: Answer) -> str | None:
        nonlocal before
        status = response.status_code
        if status >= 500 and not deliberate(response):
            return f"{status}: {response.text[:300]}"
        if case.method.upper() in WRITE_METHODS:
            after = snapshot(replica.redis, ignore=lambda _: False)
            changed = changes(before, after)
            before = after
            if 400 <= status < 500 and changed:
                return f"refused with {status} but stored {changed}"
        return None

    for operation in operations(schema):
        before = snapshot(replica.redis, ignore=lambda _: False)
        fuzz(
            operation,
            replica.target.url,
            judge,
            findings,
            headers=API_KEY,
            max_examples=MAX_EXAMPLES,
            bodies=BODIES,
        )
    assert not findings.failures, findings.report()
    assert findings.statuses.get(200, 0) > 0 and findings.statuses.get(422, 0) > 0


# -- by hand: huge bodies and bytes a client library would refuse -------------------------

KEY = [(b"X-Api-Key", API_KEY["X-Api-Key"].encode()), (b"Content-Type", b"application/json")]


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_huge_body_is_413_declared_or_chunked_and_stores_nothing(replica: Replica) -> None:
    url = replica.target.url
    huge = b'{"email": "ada@example.com", "name": "' + b"A" * HUGE_BODY + b'"}'
    before = snapshot(replica.redis, ignore=stored)
    declared = request_head("POST", "/signup", url, KEY, content_length=len(huge))
    assert raw_request(url, declared, huge).status == 413
    head = request_head("POST", "/signup", url, [*KEY, (b"Transfer-Encoding", b"chunked")])
    assert raw_request(url, head, chunked(huge)).status == 413
    assert changes(before, snapshot(replica.redis, ignore=stored)) == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"X-Api-Key", b"demo-key\xe9"), (b"Content-Type", b"application/json")], 401),
        ([(b"X-Api-Key", b"\xff\xfe"), (b"Content-Type", b"application/json")], 401),
        ([*KEY, (b"Idempotency-Key", b"cl\xc3\xa9-\xff")], 422),
        ([*KEY, (b"X-Request-Note", b"caf\xe9 \xff"), (b"User-Agent", b"\xc3\xa9t\xc3\xa9")], 202),
    ],
)
def test_non_ascii_header_bytes_are_refused_or_ignored_never_500(
    replica: Replica, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    url = replica.target.url
    body = json.dumps(SIGNUP).encode()
    head = request_head("POST", "/signup", url, headers, content_length=len(body))
    answer = raw_request(url, head, body)
    assert answer.status == status, answer.body[:300]
    get = request_head("GET", "/items/7", url, [*headers[:1], *headers[2:]])
    assert raw_request(url, get).status in (200, 401, 422)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Found by fuzzing (issue 13): FastAPI's 422 echoes the input, and these could
        # not be written as JSON, so each answered 500.
        ("/signup", b'{"email": "ada@example.com", "name": "\\ud800"}'),  # a lone surrogate
        ("/signup", b"1e999999"),  # infinity
        ("/orders", b'{"item_id": 1e400, "quantity": 1}'),
        ("/orders", b'{"item_id": NaN, "quantity": 1}'),
        ("/analytics", b'{"event": "\\udfff"}'),
    ],
)
def test_an_input_json_cannot_carry_is_a_422_not_a_500(
    replica: Replica, path: str, body: bytes
) -> None:
    url = replica.target.url
    before = snapshot(replica.redis, ignore=stored)
    head = request_head("POST", path, url, KEY, content_length=len(body))
    answer = raw_request(url, head, body)
    assert answer.status == 422, answer.body[:300]
    assert json.loads(answer.body)["detail"]  # a JSON answer that says what is wrong
    assert changes(before, snapshot(replica.redis, ignore=stored)) == []
