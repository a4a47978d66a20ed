"""Schemathesis over real servers: every operation of an app's OpenAPI schema, fuzzed
with a fixed seed and a bounded number of examples, over real HTTP.

The schema comes from the app in-process (``app.openapi()``): the demo serves no docs
and the controller's URL is only known once it runs. Each generated request is sent,
its answer judged by ``judge`` (a message when it is wrong, else None); the failures
are collected and reported together, each with the curl command that reproduces it.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import APIOperation, GenerationMode, Response
from schemathesis import Case as AnyCase
from schemathesis.core.result import Ok

Answer = Response  # what a fuzzed request got back
Operation = APIOperation[Any, Any, Any, Any]
Case = AnyCase[Any]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HUGE_BODY = 5 * 1024 * 1024  # bytes
TIMEOUT_S = 10.0


def operations(schema: Mapping[str, Any]) -> list[Operation]:
    """The operations of an OpenAPI schema (as ``app.openapi()`` returns it)."""
    loaded = schemathesis.openapi.from_dict(dict(schema))
    found = []
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), f"the app's schema does not load: {result.err()}"
        found.append(result.ok())
    return found


def path_names(operation: Operation) -> list[str]:
    """The names of ``operation``'s path parameters (``/knobs/{knob}`` -> ``["knob"]``)."""
    return operation.path.replace("}", "{").split("{")[1::2]


def cases(
    operation: Operation,
    path_parameters: Mapping[str, list[str]] | None = None,
    body: st.SearchStrategy[Any] | None = None,
) -> st.SearchStrategy[Case]:
    """Valid and invalid requests for ``operation``. ``path_parameters``: names the app
    knows for a path parameter, used in place of generated ones (a random name is a 404,
    and a slow one where an unknown name makes the app look again). ``body``: bodies the
    app takes (a schema rarely says enough for random ones to pass), as a third kind."""
    known = {
        name: values
        for name, values in (path_parameters or {}).items()
        if name in path_names(operation) and values
    }
    fixed = st.fixed_dictionaries({name: st.sampled_from(v) for name, v in known.items()})

    def generated(mode: GenerationMode, given_body: Any = None) -> st.SearchStrategy[Case]:
        def generate(names: dict[str, str]) -> st.SearchStrategy[Case]:
            extra: dict[str, Any] = {"path_parameters": names} if names else {}
            if given_body is not None:
                extra["body"] = given_body
            return operation.as_strategy(mode, **extra)

        return fixed.flatmap(generate)

    kinds = [generated(GenerationMode.POSITIVE), generated(GenerationMode.NEGATIVE)]
    if body is not None:
        kinds.append(body.flatmap(lambda b: generated(GenerationMode.POSITIVE, b)))
    return st.one_of(kinds)


@dataclass
class Failure:
    operation: str
    problem: str
    reproduce: str


@dataclass
class Findings:
    failures: list[Failure] = field(default_factory=list)
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"{len(self.failures)} failing requests of {self.sent} sent:"]
        for f in self.failures[:20]:
            lines.append(f"- {f.operation}: {f.problem}\n    {f.reproduce}")
        return "\n".join(lines)


Judge = Callable[[Case, Answer], "str | None"]


def with_headers(case: Case, headers: Mapping[str, str]) -> None:
    """``headers`` replace the case's own of the same name (in any letter case)."""
    if case.headers is None:
        case.headers = CaseInsensitiveDict()
    case.headers.update(headers)


def fuzz(
    operation: Operation,
    base_url: str,
    judge: Judge,
    findings: Findings,
    *,
    headers: Mapping[str, str],
    max_examples: int,
    path_parameters: Mapping[str, list[str]] | None = None,
    bodies: Mapping[str, st.SearchStrategy[Any]] | None = None,
) -> None:
    """Send ``max_examples`` generated requests for ``operation`` (a fixed seed: the same
    requests each run), each with ``headers`` (the credentials) in place of generated
    ones of the same name, so that it gets past the door. ``bodies``: by operation
    label (``"POST /signup"``), bodies the app takes (see ``cases``)."""
    session = requests.Session()

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=cases(operation, path_parameters, (bodies or {}).get(operation.label)))
    def run(case: Case) -> None:
        with_headers(case, headers)
        try:
            response = case.call(base_url=base_url, session=session, timeout=TIMEOUT_S)
        except requests.exceptions.InvalidHeader:
            return  # a header the client itself refuses to send: nothing reached the server
        findings.sent += 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        problem = judge(case, response)
        if problem is not None:
            findings.failures.append(
                Failure(operation.label, problem, case.as_curl_command(headers=None))
            )

    try:
        run()
    finally:
        session.close()


# -- what a write must leave alone ------------------------------------------------------


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def snapshot(client: redis.Redis, *, ignore: Callable[[str], bool]) -> dict[str, Any]:
    """Every key's type and content (keys ``ignore`` names left out): compared before and
    after a rejected write, which must change nothing."""
    seen: dict[str, Any] = {}
    for raw in client.scan_iter(count=1000):
        key = text(raw)
        if ignore(key):
            continue
        kind = text(client.type(key))
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = (client.xlen(key), client.xinfo_stream(key)["last-generated-id"])
        else:
            value = None
        seen[key] = (kind, value)
    return seen


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The keys that differ between two snapshots (added, removed or changed)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# -- raw HTTP: bytes a client library would refuse to send ---------------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    base_url: str, head: bytes, body: bytes = b"", *, timeout_s: float = TIMEOUT_S
) -> RawAnswer:
    """Send ``head`` (an HTTP/1.1 request line and headers, bytes as given), then ``body``
    in pieces until the server answers (a server may refuse a body before it is all
    sent), and read one answer."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(head)
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < len(body):
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # answered early
                sent += sock.send(body[sent : sent + 65536])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        answer_head, _, answer_body = data.partition(b"\r\n\r\n")
        lines = answer_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        with contextlib.suppress(ConnectionResetError):
            while len(answer_body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer_body += chunk
        return RawAnswer(status, headers, answer_body)


def request_head(
    method: str,
    path: str,
    base_url: str,
    headers: list[tuple[bytes, bytes]],
    content_length: int | None = None,
) -> bytes:
    """An HTTP/1.1 request line and headers; header names and values are bytes, sent as
    they are (a client library would refuse non-ASCII ones)."""
    host = base_url.removeprefix("http://").encode()
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host, b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
