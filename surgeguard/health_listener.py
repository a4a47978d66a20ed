"""``/healthz`` and ``/metrics`` on a port of their own, answered by a thread.

The door answers both on the service's port without routing, but a request there
still waits for the event loop, and when 10,000 clients connect at once the new
connection of a liveness probe first waits in the kernel's accept queue behind
theirs (measured: one probe in the first second of such a storm took 0.9-1.7 s).
An orchestrator that kills a replica for that kills a replica that works.

This listener has its own socket and its own thread, so neither the accept queue
nor the loop's backlog is in its way; it only needs the interpreter lock, which a
busy loop hands over every few milliseconds. It reports the loop itself:
``/healthz`` is 200 while the loop's heartbeat is recent and 503 when the loop has
not run for ``stall_s`` seconds (a wedged replica should be restarted).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthListener:
    """Serve ``/healthz`` and ``/metrics`` from ``registry`` on ``host:port`` (0: any
    free port). ``heartbeat()``: clock time (``clock``'s) the event loop last ran;
    ``stall_s``: seconds without a heartbeat after which ``/healthz`` answers 503."""

    def __init__(
        self,
        registry: CollectorRegistry,
        heartbeat: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stall_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_s <= 0:
            raise ValueError(f"stall_s must be > 0 seconds, got {stall_s}")
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, content_type, body = listener.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # a probe every second is not news

        self.registry = registry
        self.heartbeat = heartbeat
        self.stall_s = stall_s
        self.clock = clock
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/healthz":
            silent_s = self.clock() - self.heartbeat()
            if silent_s > self.stall_s:
                body = {"status": "stalled", "loop_silent_s": round(silent_s, 3)}
                return 503, "application/json", json.dumps(body).encode()
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "application/json", b'{"error":"not found: /healthz or /metrics"}'

    def start(self) -> HealthListener:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-listener",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
