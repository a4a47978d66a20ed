"""Child processes that never outlive their parent, and stop gracefully."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux).

    Caveat: the kernel fires PDEATHSIG when the *thread* that forked the child exits,
    not the whole process. So the child must be started on a long-lived thread (normally the
    main thread); started from a short-lived worker thread, redis is killed as soon as
    that thread ends.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolve prctl before fork: the child between fork and exec must not load libraries.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died before prctl ran; then no signal will ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick), for
    a child asked to take "any" port. Another process may take it before the child
    binds it: callers that can, retry with a new pick."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(
    proc: subprocess.Popen[Any], timeout_s: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """``sig`` (SIGTERM; SIGINT or SIGQUIT for a program that stops gracefully on
    those), wait up to ``timeout_s`` seconds, then SIGKILL; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
