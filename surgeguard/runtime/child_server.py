"""A server program run as a child process we own: what the embedded Redis and the
embedded Postgres have in common.

``ChildServer`` keeps the life of one such child: a data directory (absolute, locked
with an exclusive ``flock`` the child inherits, so two servers never share one and the
lock lasts until the child itself exits), a generated password kept in that directory
(mode 0600, made at first need, the same on every later start), a start that picks a
free loopback port and picks again when another process took it first, and a stop
that signals, waits and then kills. The child never outlives us: it gets
``PR_SET_PDEATHSIG`` (``surgeguard.runtime.process.die_with_parent``), runs in its own
session (a terminal's Ctrl-C reaches only us, so we decide the shutdown order) and an
``atexit`` hook stops it on a normal interpreter exit.

A subclass says which program it runs and how: where its binaries are, what to do
before the first spawn (Postgres: ``initdb``), how to spawn it and tell that it is
ready, and what to do once it is (Postgres: its role and database). ``serve_forever``
runs one in the foreground until SIGINT/SIGTERM (``surgeguard redis``, ``surgeguard
postgres``).
"""

from __future__ import annotations

import abc
import atexit
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, ClassVar, Self

from surgeguard.runtime.process import die_with_parent, free_port, terminate

__all__ = ["ChildServer", "serve_forever"]

# A port picked from port 0 can be taken by someone else before the server binds it;
# a few fresh picks make that race practically impossible to lose every time.
_BIND_ATTEMPTS = 5
_POLL_S = 0.05


def _tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


class ChildServer(abc.ABC):
    """One server child process bound to ``host``, its files in ``data_dir``.

    Not thread-safe: create, start and stop it from one long-lived thread (normally the
    main thread: PR_SET_PDEATHSIG fires when the thread that forked the child exits).
    """

    # What a subclass names: the program (in messages), the server kind (in messages:
    # "in use by another redis server"), its files in the data directory, its error.
    _PROGRAM: ClassVar[str]
    _KIND: ClassVar[str]
    _LOG_NAME: ClassVar[str]
    _LOCK_NAME: ClassVar[str]
    PASSWORD_NAME: ClassVar[str]
    _ERROR: ClassVar[type[RuntimeError]]
    # How it stops gracefully, and how long (seconds) one that never came up gets to.
    _STOP_SIGNAL: ClassVar[int] = signal.SIGTERM
    _ABORT_TIMEOUT_S: ClassVar[float] = 2.0
    # What its log says when the port was taken: then a picked port is picked again.
    _PORT_TAKEN: ClassVar[str] = "Address already in use"

    def __init__(
        self, data_dir: Path | str, port: int | None, host: str, startup_timeout_s: float
    ) -> None:
        """``port=None`` picks a free port at start; ``startup_timeout_s`` in seconds."""
        # Absolute because the server may chdir (redis into --dir): a relative path
        # handed to it would then name another place.
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._requested_port = port
        self._port = port
        self._host = host
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[bytes] | None = None

    # -- what a subclass says ------------------------------------------------------------

    @abc.abstractmethod
    def _find_programs(self) -> Path:
        """Where the server's binaries are (a binary or its directory); raises the
        subclass's not-found error. Called before anything is made on disk."""

    def _prepare(self, programs: Path) -> None:
        """Run once per start with the data directory locked, before the first spawn;
        nothing by default."""
        return None

    @abc.abstractmethod
    def _spawn_and_wait(self, programs: Path, port: int) -> str | None:
        """Run the server on ``port`` until it is ready (``None``), or return an error
        text (with ``_PORT_TAKEN`` in it when the port was taken). Uses ``_spawn`` and
        ``_wait_ready``."""

    def _started(self, programs: Path) -> None:
        """Run once the server is ready on its port, before ``start`` returns; nothing
        by default."""
        return None

    # -- where and how to reach it -------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The absolute directory holding the server's files and its log."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log (its stdout and stderr too), in the data directory."""
        return self._data_dir / self._LOG_NAME

    @property
    def port(self) -> int:
        """The TCP port; known before ``start()`` only when it was given explicitly."""
        if self._port is None:
            raise self._ERROR("port not chosen yet: call start() first")
        return self._port

    @property
    def password(self) -> str:
        """The server's password, from ``PASSWORD_NAME`` in the data directory; made
        (random, mode 0600) the first time it is needed and kept for every later start."""
        path = self._data_dir / self.PASSWORD_NAME
        try:
            return path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # URL- and SQL-literal-safe characters only: it goes into URLs unquoted.
        password = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent first start: use that one
            return path.read_text(encoding="ascii").strip()
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(password + "\n")
        return password

    @property
    def pid(self) -> int | None:
        """Process id of the running server, ``None`` when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait (up to ``startup_timeout_s`` seconds) until it is
        ready.

        Raises the subclass's error if already started, if the data directory is in use
        by another server, or if the server does not come up (the message has the log
        tail). Call this from a long-lived thread (see the class docstring).
        """
        if self._proc is not None:
            raise self._ERROR(f"already started (pid {self._proc.pid}); call stop() first")
        programs = self._find_programs()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._prepare(programs)
            attempts = 1 if self._requested_port is not None else _BIND_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self._host)
                error = self._spawn_and_wait(programs, port)
                if error is None:
                    self._port = port
                    break
                if attempt == attempts or self._PORT_TAKEN not in error:
                    raise self._ERROR(error)
            self._started(programs)
            atexit.register(self.stop)
        except BaseException:
            self.stop()  # also on Ctrl-C mid-wait: no half-started server, no lock left
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (``_STOP_SIGNAL``), then SIGKILL after ``timeout_s`` seconds
        without exit. Safe to call twice, and when never started."""
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            terminate(proc, timeout_s, sig=self._STOP_SIGNAL)
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

    # -- steps ---------------------------------------------------------------------------

    def _lock_data_dir(self) -> None:
        """Hold an exclusive flock on the data dir while a server uses it.

        The lock fd is inherited by the server too, so the lock lasts until the server
        itself exits, even when we were killed first and it is still shutting down.
        """
        lock_file = (self._data_dir / self._LOCK_NAME).open("ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise self._ERROR(
                f"data dir {self._data_dir} is in use by another {self._KIND} server"
            ) from None
        self._lock_file = lock_file

    def _unlock_data_dir(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing our fd drops the flock (the server's copy is gone)

    def _with_log_tail(self, what: str) -> str:
        """``what`` went wrong, followed by the end of the server's log."""
        return f"{what}; log tail ({self.log_path}):\n{_tail(self.log_path)}"

    def _spawn(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``args`` as the server child (``popen``: more ``Popen`` arguments: stdin,
        cwd, user, ...), its output appended to the log; it becomes ``_proc``."""
        assert self._lock_file is not None
        # Startup errors (bad config) go to stderr before a log file opens: keep them too.
        with self.log_path.open("ab") as log:
            proc: subprocess.Popen[bytes] = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                pass_fds=(self._lock_file.fileno(),),
                # Own session: a terminal Ctrl-C reaches only us, so we decide the
                # shutdown order (apps first, their servers last). PDEATHSIG covers our
                # death. Popen drops to ``user`` (when given) before it runs preexec_fn,
                # and PDEATHSIG must be set after that change, which clears it.
                start_new_session=True,
                preexec_fn=die_with_parent(),
                **popen,
            )
        self._proc = proc
        return proc

    def _wait_ready(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        ready: Callable[[int], bool],
        waiting_for: str,
    ) -> str | None:
        """Poll until ``ready(pid)`` (``None``), the child exits, or ``startup_timeout_s``
        seconds pass (then it is stopped); an error text with the log tail on failure.
        ``waiting_for`` completes "did not ..." in that text."""
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            if proc.poll() is not None:
                self._proc = None
                return self._with_log_tail(
                    f"{self._PROGRAM} exited with code {proc.returncode} while starting on "
                    f"{self._host}:{port}"
                )
            if ready(proc.pid):
                return None
            if time.monotonic() >= deadline:
                self._proc = None
                terminate(proc, timeout_s=self._ABORT_TIMEOUT_S, sig=self._STOP_SIGNAL)
                return self._with_log_tail(
                    f"{self._PROGRAM} did not {waiting_for} on {self._host}:{port} within "
                    f"{self._startup_timeout_s} s"
                )
            time.sleep(_POLL_S)


def serve_forever(server: ChildServer, banner: Callable[[], str]) -> int:
    """Start ``server`` and serve in the foreground until SIGINT/SIGTERM; ``banner()``
    is printed once it is ready.

    Must run on the main thread (signal handlers). Returns the exit code: 0 after a
    requested stop, 1 if the server died on its own.
    """
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(banner(), flush=True)
        # A short sleep loop, not a blocking wait: the handler only sets a flag, and
        # we also notice the server dying under us.
        while not stop_requested and server.running:
            time.sleep(0.2)
        if not stop_requested:
            print(f"{server._KIND} exited unexpectedly; see {server.log_path}", file=sys.stderr)
            return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
