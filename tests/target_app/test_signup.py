"""Issue 13: ``202`` means durable, and a retried signup is the same signup.

Real uvicorn and a real embedded Redis: an ``Idempotency-Key`` makes a retry (after a
lost answer or a client that gave up) return the first signup; bad keys are refused
naming the header; the job data has bounds; a Redis SIGKILLed while signups flow keeps
every signup that got a ``202``; ``SURGEGUARD_REDIS_FSYNC=always`` reaches the embedded
Redis of a real ``surgeguard target``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.jobs.streams import (
    ANALYTICS_STREAM,
    EMAIL_STREAM,
    SIGNUP_KEY,
    Retention,
    store_signup,
)
from tests.support.polling import eventually, until_truthy
from tests.support.processes import child_env, free_port
from tests.target_app.conftest import API_KEY, SIGNUP, RunningTarget, StartTarget


def post(http: httpx.Client, key: str | None, body: dict[str, str] = SIGNUP) -> httpx.Response:
    headers = {**API_KEY, **({"Idempotency-Key": key} if key is not None else {})}
    return http.post("/signup", json=body, headers=headers)


async def _length(client: aioredis.Redis, stream: str, length: int) -> bool:
    return bool(await client.xlen(stream) == length)


def raw_post(target: RunningTarget, key: bytes) -> tuple[int, bytes]:
    """POST /signup with the header's bytes exactly as given (no client validation)."""
    body = b'{"email":"ada@example.com","name":"Ada"}'
    host, port = target.url.removeprefix("http://").split(":")
    request = (
        b"POST /signup HTTP/1.1\r\nHost: x\r\nX-Api-Key: demo-key\r\n"
        b"Content-Type: application/json\r\nIdempotency-Key: " + key + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def test_two_posts_with_one_key_are_one_signup(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    target = start_target()
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        first = post(http, "order-7f3a")
        again = post(http, "order-7f3a")
        other = post(http, "order-8b21")
        plain = [post(http, None), post(http, None)]
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()  # same id, same status URL
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.json()["id"] != first.json()["id"]
    assert plain[0].json()["id"] != plain[1].json()["id"]  # no key: every POST is new
    assert redis_client.xlen(EMAIL_STREAM) == 4  # one welcome email per signup


def test_a_key_is_scoped_to_its_client_and_to_its_body(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    target = start_target(client_keys="demo-key,other-key")
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        mine = post(http, "k-1")
        theirs = http.post(
            "/signup", json=SIGNUP, headers={"X-Api-Key": "other-key", "Idempotency-Key": "k-1"}
        )
        reused = post(http, "k-1", {"email": "bob@example.com", "name": "Bob"})
    assert mine.status_code == theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]  # another client's key never matches
    assert reused.status_code == 422
    assert "Idempotency-Key" in reused.json()["detail"]
    assert redis_client.xlen(EMAIL_STREAM) == 2  # the reused key stored nothing


async def test_a_retry_after_a_lost_answer_is_the_same_signup(
    start_target: StartTarget, redis_server: EmbeddedRedis
) -> None:
    target = start_target()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        # The store acknowledged, the answer never reached the client (its 503 or its
        # timeout): what the route stored, stored the way the route stores it.
        lost = await store_signup(
            client, "ada@example.com", "Ada", idempotency_key="k-lost", client_key="demo-key"
        )
        async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as http:
            retry = await http.post(
                "/signup", json=SIGNUP, headers={**API_KEY, "Idempotency-Key": "k-lost"}
            )
            assert retry.status_code == 202
            assert retry.json()["id"] == lost.id

            # A client that gives up before the answer: Redis holds writes for a moment,
            # the client's timeout fires, the replica's write lands after it left.
            await client.client_pause(350, all=False)
            with pytest.raises(httpx.TimeoutException):
                await http.post(
                    "/signup",
                    json=SIGNUP,
                    headers={**API_KEY, "Idempotency-Key": "k-gave-up"},
                    timeout=0.1,
                )
            # The replica was still waiting on Redis: its write lands once writes resume.
            await eventually(
                lambda: _length(client, EMAIL_STREAM, 2), timeout_s=5.0, what="the late write"
            )
            late = [f[b"signup_id"].decode() for _, f in await client.xrange(EMAIL_STREAM)][-1]
            for _ in range(5):  # what a client does: retry, with the same key
                retry = await http.post(
                    "/signup", json=SIGNUP, headers={**API_KEY, "Idempotency-Key": "k-gave-up"}
                )
                if retry.status_code == 202:
                    break
            assert retry.status_code == 202
            assert retry.json()["id"] == late
        assert await client.xlen(EMAIL_STREAM) == 2  # one job per key, however many tries
        jobs = await client.xrange(EMAIL_STREAM)
        assert {f[b"signup_id"].decode() for _, f in jobs} == {lost.id, retry.json()["id"]}
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "key",
    [b"k" * 256, b"has space", b"caf\xc3\xa9", b"tab\there", b""],
    ids=["too-long", "space", "non-ascii", "tab", "empty"],
)
def test_a_bad_key_is_422_naming_the_header(
    start_target: StartTarget, redis_client: redis.Redis, key: bytes
) -> None:
    target = start_target()
    status, payload = raw_post(target, key)
    assert status == 422, payload
    assert b"Idempotency-Key" in payload
    # A control byte never reaches the app: the HTTP parser refuses the request (400).
    status, payload = raw_post(target, b"bell\x07")
    assert status == 400, payload
    assert redis_client.xlen(EMAIL_STREAM) == 0


async def test_job_data_has_bounds(start_target: StartTarget, redis_server: EmbeddedRedis) -> None:
    target = start_target(signup_ttl_s=3600, idempotency_window_s=600, analytics_maxlen=100)
    with httpx.Client(base_url=target.url, timeout=5.0) as http:
        signup_id = post(http, "k-ttl").json()["id"]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert 3590 <= await client.ttl(SIGNUP_KEY.format(id=signup_id)) <= 3600
        [record] = [k async for k in client.scan_iter("surgeguard:signup-request:*")]
        assert 590 <= await client.ttl(record) <= 600
        bounded = Retention(analytics_maxlen=100)
        for _ in range(600):
            await store_signup(client, "a@example.com", "A", retention=bounded)
        # MAXLEN ~ trims whole nodes (100 entries each): about 100, never the 601 added.
        assert 100 <= await client.xlen(ANALYTICS_STREAM) < 200
        assert await client.xlen(EMAIL_STREAM) == 601  # jobs not done are never trimmed
        # POST /analytics trims the same stream: 500 events added untrimmed, then one more.
        async with client.pipeline(transaction=False) as pipe:
            for n in range(500):
                pipe.xadd(ANALYTICS_STREAM, {"task": "analytics", "event": "x", "n": n})
            await pipe.execute()
        assert await client.xlen(ANALYTICS_STREAM) >= 500
        async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as http:
            event = await http.post("/analytics", json={"event": "viewed"}, headers=API_KEY)
        assert event.status_code == 202
        assert 100 <= await client.xlen(ANALYTICS_STREAM) < 200
    finally:
        await client.aclose()


def test_a_redis_killed_mid_signups_keeps_every_202(
    start_target: StartTarget, tmp_path: Path
) -> None:
    own = EmbeddedRedis(data_dir=tmp_path / "redis")
    own.start()
    port = own.port
    stop = threading.Event()
    accepted: list[str] = []
    failed: list[int] = []
    details: list[str] = []

    def post_signups() -> None:
        with httpx.Client(base_url=target.url, timeout=5.0) as http:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                try:
                    response = post(http, f"kill-{i}", {"email": f"u{i}@example.com", "name": "U"})
                except httpx.HTTPError:
                    failed.append(0)
                    continue
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                else:
                    failed.append(response.status_code)
                    details.append(response.json().get("detail", ""))

    try:
        target = start_target(redis_url=own.url)
        client = threading.Thread(target=post_signups, daemon=True)
        client.start()
        eventually_sync(lambda: len(accepted) >= 200, "signups before the kill")
        assert own.pid is not None
        os.kill(own.pid, signal.SIGKILL)  # no shutdown, no final fsync
        eventually_sync(lambda: len(failed) >= 3, "signups refused while Redis is dead")
        own.stop()
        own = EmbeddedRedis(data_dir=tmp_path / "redis", port=port)
        own.start()
        stop.set()
        client.join(timeout=10)
        check = redis.Redis.from_url(own.url)
        try:
            with check.pipeline(transaction=False) as pipe:
                for signup_id in accepted:
                    pipe.exists(SIGNUP_KEY.format(id=signup_id))
                assert all(pipe.execute()), "a signup that got 202 is gone"
            jobs = {f[b"signup_id"].decode() for _, f in check.xrange(EMAIL_STREAM)}
            assert set(accepted) <= jobs
        finally:
            check.close()
        assert set(failed) <= {0, 503}
        # A 503 does not claim "nothing stored" (a write may land after its reply is
        # lost): it says how to retry safely.
        assert details and all("same Idempotency-Key" in d for d in details)
    finally:
        stop.set()
        own.stop()


def eventually_sync(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    until_truthy(check, timeout_s, what, every_s=0.01)


def test_redis_fsync_always_reaches_the_embedded_redis(tmp_path: Path) -> None:
    """``SURGEGUARD_REDIS_FSYNC=always``: a real ``surgeguard target`` with no Redis URL
    starts its embedded Redis syncing before every reply."""
    data_dir = tmp_path / "data"
    log = tmp_path / "target.log"
    args = ["target", "--port", str(free_port()), "--data-dir", str(data_dir)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "surgeguard", *args],
            env=child_env(None, redis_fsync="always"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return b"listening on" in log.read_bytes()

        eventually_sync(up, "the target with its embedded Redis")
        client = redis.Redis(
            host="127.0.0.1",
            port=_embedded_port(data_dir),
            password=(data_dir / "redis.password").read_text().strip(),
            socket_timeout=5,
        )
        try:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
        finally:
            client.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


def _embedded_port(data_dir: Path) -> int:
    """The embedded Redis's port, from its log ("... Running mode=standalone, port=N.")."""
    for line in (data_dir / "redis.log").read_text().splitlines():
        if "port=" in line:
            return int(line.rsplit("port=", 1)[1].rstrip("."))
    raise AssertionError("no port in the embedded Redis's log")
