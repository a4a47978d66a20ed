"""Issue 11: the load balancer's config (nginx/nginx.conf) as a file, and as a real nginx.

nginx strips ``X-Priority`` coming from outside (unless the operator trusts the sender),
sends no ``X-Upstream`` to clients, tells the replicas the client's address in
``X-Real-IP``, and waits longer for an answer than a replica may hold a client that came
back before its Retry-After.

The live part runs Debian's nginx (CI installs it) on loopback in front of a tiny real
uvicorn app that echoes the headers it got. nginx.conf is used as written except where a
machine without Docker forces a change: the upstream servers (compose names with
``resolve``, which needs nginx >= 1.27.3) become the echo app's loopback address, and the
listen port, log, pid and temp paths move into the test's directory. Each rewrite must
find what it replaces, so a config that drifts from this template fails here loudly.
"""

from __future__ import annotations

import getpass
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from surgeguard.asgi import Receive, Scope, Send
from surgeguard.settings import ReplicaSettings
from tests.support.asgi import serve_lifespan
from tests.support.polling import until
from tests.support.processes import free_port, stop
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (CI installs Debian's nginx package)"
)


def config_text() -> str:
    """nginx.conf without its comments."""
    return re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())


def directives(name: str) -> list[str]:
    """The arguments of every ``name ...;`` directive, comments dropped."""
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^\s*{name}\s+([^;]*);", config_text())]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, f"cannot read the nginx time {value!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


# -- the file ------------------------------------------------------------------------


def test_x_priority_from_outside_is_replaced_by_a_value_only_trusted_senders_set() -> None:
    headers = dict(h.split(None, 1) for h in directives("proxy_set_header"))
    assert headers["X-Priority"] == "$surgeguard_priority"
    text = config_text()
    # Nobody is trusted by default ...
    geo = re.search(r"geo\s+\$surgeguard_priority_trusted\s*\{(?P<body>[^}]*)\}", text)
    assert geo, "no geo block deciding whose X-Priority is believed"
    assert re.findall(r"(\S+)\s+(\S+);", geo.group("body")) == [("default", "0")]
    # ... and an untrusted sender's header becomes empty, which nginx leaves out.
    mapped = re.search(
        r"map\s+\$surgeguard_priority_trusted\s+\$surgeguard_priority\s*\{(?P<body>[^}]*)\}", text
    )
    assert mapped, "no map from trust to the X-Priority sent on"
    rules = dict(re.findall(r"(\S+)\s+(\S+);", mapped.group("body")))
    assert rules == {"1": "$http_x_priority", "default": '""'}


def test_clients_are_not_told_which_replica_answered() -> None:
    assert not any("x-upstream" in h.lower() for h in directives("add_header"))
    assert "X-Upstream" not in config_text()
    # The balancing stays visible where an operator looks: the access log.
    (log_format,) = [f for f in directives("log_format") if f.startswith("upstream ")]
    assert "$upstream_addr" in log_format


def test_the_replicas_get_the_address_nginx_saw() -> None:
    headers = dict(h.split(None, 1) for h in directives("proxy_set_header"))
    assert headers["X-Real-IP"] == "$remote_addr"


def test_nginx_waits_longer_than_a_replica_holds_an_early_client() -> None:
    """A held answer (a 429 after up to the longest Retry-After) must reach the client,
    not turn into nginx's own 504."""
    (read_timeout,) = directives("proxy_read_timeout")
    longest_hold_s = ReplicaSettings.model_fields["penalty_max_retry_after_s"].default
    assert seconds(read_timeout) > longest_hold_s


# -- a real nginx ----------------------------------------------------------------------


async def echo_headers(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI app answering every request with the headers it received."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    body = json.dumps(headers).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"nginx.conf no longer has one match of {pattern!r} ({count})"
    return new


def loopback_config(upstream_port: int, port: int, run_dir: Path, *, trust: str = "") -> str:
    """nginx.conf aimed at one loopback upstream, listening on ``port``, with its
    files in ``run_dir``; ``trust``: an extra line for the X-Priority geo block."""
    text = NGINX_CONF.read_text()
    text = replace_once(text, r"^user \S+;", f"user {getpass.getuser()};\ndaemon off;")
    text = replace_once(text, r"^worker_processes \S+;", "worker_processes 1;")
    text = replace_once(
        text,
        r"^error_log \S+ (\w+);",
        rf"error_log {run_dir}/error.log \1;\npid {run_dir}/nginx.pid;",
    )
    text = replace_once(
        text, r"access_log /var/log/nginx/access.log", f"access_log {run_dir}/access.log"
    )
    text = replace_once(text, r"^\s*resolver [^;]*;\n", "")
    text = replace_once(text, r"^\s*resolver_timeout [^;]*;\n", "")
    servers = re.findall(r"(?m)^\s*server \S+:\d+ resolve[^;]*;\n", text)
    assert servers, "no `server host:port resolve ...;` lines in the upstream block"
    text = text.replace(servers[0], f"        server 127.0.0.1:{upstream_port};\n", 1)
    for line in servers[1:]:
        text = text.replace(line, "", 1)
    temp = "\n".join(
        f"    {kind}_temp_path {run_dir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = replace_once(text, r"^http \{\n", f"http {{\n{temp}\n")
    text = replace_once(text, r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{port};")
    if trust:
        text = replace_once(
            text, r"(geo \$surgeguard_priority_trusted \{\n)", rf"\1        {trust}\n"
        )
    return text


@contextmanager
def nginx(config: str, run_dir: Path, port: int) -> Iterator[str]:
    """A real nginx in the foreground with ``config``, stopped by its pid at the end."""
    assert NGINX is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(config)
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(run_dir), "-e", str(run_dir / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(run_dir), "-e", str(run_dir / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool | None:
            assert process.poll() is None, (run_dir / "error.log").read_text()
            try:
                answered = httpx.get(f"{url}/lb-healthz", timeout=1.0, trust_env=False)
            except httpx.HTTPError:
                return None
            return True if answered.is_success else None

        until(ready, timeout_s=15.0, what="nginx answers /lb-healthz")
        yield url
    finally:
        stop(process, sig=signal.SIGQUIT)  # graceful: workers finish, then exit


@pytest.fixture
def echo() -> Iterator[ServerThread]:
    with ServerThread(echo_headers) as server:
        yield server


def through(url: str, **headers: str) -> tuple[httpx.Response, dict[str, list[str]]]:
    response = httpx.get(f"{url}/feed", headers=headers, timeout=5.0, trust_env=False)
    assert response.status_code == 200, response.text
    received: dict[str, list[str]] = response.json()
    return response, received


@needs_nginx
def test_a_claimed_priority_from_outside_never_reaches_the_replica(
    echo: ServerThread, tmp_path: Path
) -> None:
    port = free_port()
    with nginx(loopback_config(echo.port, port, tmp_path), tmp_path, port) as url:
        response, received = through(
            url, **{"X-Priority": "critical", "X-Api-Key": "k", "X-Real-IP": "203.0.113.9"}
        )
    assert "x-priority" not in received, received
    assert received["x-api-key"] == ["k"]  # everything else passes
    # The address nginx saw, not the one the client claimed.
    assert received["x-real-ip"] == ["127.0.0.1"]
    assert "x-upstream" not in response.headers
    assert f"upstream=127.0.0.1:{echo.port}" in (tmp_path / "access.log").read_text()


@needs_nginx
def test_an_operator_who_trusts_a_sender_gets_its_x_priority_through(
    echo: ServerThread, tmp_path: Path
) -> None:
    port = free_port()
    config = loopback_config(echo.port, port, tmp_path, trust="127.0.0.1 1;")
    with nginx(config, tmp_path, port) as url:
        _, claimed = through(url, **{"X-Priority": "sheddable"})
        _, plain = through(url)
    assert claimed["x-priority"] == ["sheddable"]
    assert "x-priority" not in plain  # no header in, none made up
