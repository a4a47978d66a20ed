"""The Locust child process: where its file is, reading its output, ending it.

Locust runs headless in its own process (it monkeypatches the standard library with
gevent). Its stdout carries a ``PROGRESS {json}`` line a second (see the locustfile);
the first one fixes when its shape's clock started.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from surgeguard.runtime.process import terminate as stop

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
STOP_FILE = "stop-requested"  # the shape ends the run when this appears in --out
STOP_GRACE_S = 15.0  # for Locust to end a run it was asked to end, then SIGTERM


class LocustOutput(threading.Thread):
    """Reads Locust's stdout: keeps the latest ``PROGRESS`` record, passes the rest on."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(name="locust-output", daemon=True)
        self.process = process
        self.latest: dict[str, Any] | None = None
        # (sent, shed, failed) requests per wall-clock second (unix): later lines win,
        # as a master's counts for a second grow while its workers report
        self.seconds: dict[int, tuple[int, int, int]] = {}
        self.other: list[str] = []
        self.started = threading.Event()
        self.started_mono = 0.0  # when Locust's test (and its shape clock) started

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("PROGRESS "):
                with suppress(ValueError):
                    self.latest = json.loads(line[len("PROGRESS ") :])
                    for second, counts in (self.latest.get("seconds") or {}).items():
                        sent, shed, failed = (int(c) for c in counts)
                        self.seconds[int(second)] = (sent, shed, failed)
                    if not self.started.is_set():
                        self.started_mono = time.monotonic() - float(self.latest["t"])
                        self.started.set()
            else:
                self.other.append(line.rstrip("\n"))


def stop_locust(process: subprocess.Popen[str], stop_file: Path) -> None:
    """Ask the shape to end the run (Locust then writes all its reports); SIGTERM if
    it does not within ``STOP_GRACE_S``, SIGKILL if that fails too."""
    try:
        if process.poll() is None:
            stop_file.touch()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                stop(process, STOP_GRACE_S)
    finally:
        stop_file.unlink(missing_ok=True)
