"""Where a running ``surgeguard up`` put everything: its state file, and what it says.

``up`` writes ``<data dir>/up.json`` (mode 0600) once its stack is healthy and removes
it when it stops; ``surgeguard status`` reads it, and ``up`` prints the same on SIGUSR1.
The admin token itself is never in it, nor in anything printed after the start banner:
only where it is kept (a generated token in ``<data dir>/admin-token``, mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

STATE_NAME = "up.json"
TOKEN_NAME = "admin-token"
TOKEN_ENV = "SURGEGUARD_ADMIN_TOKEN"


class StateFileError(RuntimeError):
    """The state file exists but cannot be read as one."""


@dataclass(frozen=True)
class Service:
    """One part of the stack: ``url`` to show, ``health`` answers 200 while it is fine."""

    name: str
    url: str
    pid: int | None = None
    health: str | None = None
    note: str = ""


@dataclass(frozen=True)
class StackState:
    pid: int  # the ``surgeguard up`` process
    started_at: float  # unix seconds
    data_dir: str
    token_file: str | None  # None: the token came from SURGEGUARD_ADMIN_TOKEN
    services: tuple[Service, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, raw: str) -> StackState:
        try:
            doc = json.loads(raw)
            return cls(
                pid=int(doc["pid"]),
                started_at=float(doc["started_at"]),
                data_dir=str(doc["data_dir"]),
                token_file=None if doc["token_file"] is None else str(doc["token_file"]),
                services=tuple(Service(**s) for s in doc["services"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"not a surgeguard up state file: {exc}") from None


def state_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / STATE_NAME


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(part, path)


def read_state(data_dir: Path) -> StackState | None:
    """The state file in ``data_dir``; None when there is none."""
    path = state_path(data_dir)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None
    return StackState.from_json(raw)


def remove_state(data_dir: Path, pid: int) -> None:
    """Remove the state file (and the generated token) if process ``pid`` wrote them."""
    with contextlib.suppress(StateFileError):
        state = read_state(data_dir)
        if state is None or state.pid != pid:
            return
        if state.token_file is not None:
            Path(state.token_file).unlink(missing_ok=True)
        state_path(data_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def probe(state: StackState, timeout_s: float = 2.0) -> dict[str, bool]:
    """Whether each service with a health URL answers 200 right now."""
    answering: dict[str, bool] = {}
    for service in state.services:
        if service.health is None:
            continue
        try:
            response = httpx.get(service.health, timeout=timeout_s, trust_env=False)
            answering[service.name] = response.status_code == 200
        except httpx.HTTPError:
            answering[service.name] = False
    return answering


def token_line(token_file: str | None) -> str:
    if token_file is None:
        return f"  admin token the {TOKEN_ENV} that up was started with"
    return f"  admin token kept in {token_file} (mode 0600)"


def service_lines(state: StackState, answering: Mapping[str, bool] | None = None) -> list[str]:
    """One line per service: name, URL, what it is, its pid (and whether it answers)."""
    lines = []
    for s in state.services:
        notes = [n for n in (s.note, f"pid {s.pid}" if s.pid is not None else "") if n]
        if answering is not None and not answering.get(s.name, True):
            notes.append("NOT ANSWERING")
        lines.append(f"  {s.name:<11} {s.url}" + (f"   ({'; '.join(notes)})" if notes else ""))
    return lines


def describe(state: StackState, answering: Mapping[str, bool] | None = None) -> str:
    """The URLs, pids and where the token is: what ``status`` and SIGUSR1 print."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at))
    head = f"surgeguard is up: pid {state.pid} since {since}, data in {state.data_dir}"
    return "\n".join([head, *service_lines(state, answering), token_line(state.token_file)])


def status(data_dir: Path) -> tuple[int, str]:
    """(exit status, text) for ``surgeguard status``: 0 when a stack is up, 1 when not."""
    path = state_path(data_dir)
    try:
        state = read_state(data_dir)
    except StateFileError as exc:
        return 1, f"no stack is up from {path.parent}: {exc}"
    if state is None:
        return 1, f"no stack is up: no {path} (start one with surgeguard up)"
    if not pid_alive(state.pid):
        return 1, (
            f"no stack is up: {path} was left by surgeguard up pid {state.pid}, "
            "which is gone (it did not stop cleanly)"
        )
    return 0, describe(state, probe(state))
