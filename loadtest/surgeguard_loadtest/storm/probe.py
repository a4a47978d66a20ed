"""A liveness prober in its own process:
``python -m surgeguard_loadtest.storm.probe URL PERIOD_S [--keep-alive]``.

Asks ``URL`` every ``PERIOD_S`` seconds on a new connection each time (as a
Kubernetes HTTP probe does; ``--keep-alive``: on one kept-alive connection, which
shows how fast the service answers once a request has reached it, apart from how long
a new connection waits to be accepted) and prints one line per probe: when it was sent
(``time.monotonic()``, the same clock in every process of this machine), how long
the answer took (seconds) and its status (0: no answer within ``TIMEOUT_S``). It
runs until SIGTERM or until its parent goes away.

Its own process, because a prober sharing an interpreter with a thread that parses
``/metrics`` (tens of ms with the GIL held) would measure its neighbour, not the
service.
"""

from __future__ import annotations

import http.client
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from urllib.parse import urlsplit

TIMEOUT_S = 15.0


def probe(connection: http.client.HTTPConnection, path: str, keep_alive: bool) -> int:
    """One GET; its status (0: failed or timed out). The connection is closed after
    it unless ``keep_alive`` (and after a failure: the next probe connects again)."""
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = 0
    if not keep_alive or status == 0:
        connection.close()
    return status


def main(argv: Sequence[str]) -> int:
    url, period_s, keep_alive = argv[0], float(argv[1]), "--keep-alive" in argv[2:]
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    running = True

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    next_at = time.monotonic()
    while running:
        started = time.monotonic()
        status = probe(connection, path, keep_alive)
        print(f"{started:.6f} {time.monotonic() - started:.6f} {status}", flush=True)
        # Probes keep their schedule; one that took longer than the period is not
        # followed by a burst of catch-up probes.
        next_at = max(next_at + period_s, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
