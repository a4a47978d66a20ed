"""A /metrics endpoint whose samples a test sets: a stand-in for a surgeguard process
when a test needs a metric to move at a moment it chooses (a counter stepping, a gauge
switching), which the real processes do only under conditions slow to arrange."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StaticExporter:
    """Serves ``name{labels} value`` lines in Prometheus's text format on loopback.

    ``set('surgeguard_jobs_dead_total{task="x"}', 3)`` adds or changes a sample; a
    scrape sees the values of that moment. ``scrapes`` counts the scrapes served."""

    def __init__(self) -> None:
        self._samples: dict[str, float] = {}
        self._types: dict[str, str] = {}
        self._lock = threading.Lock()
        self.scrapes = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """host:port, as a scrape target."""
        return f"127.0.0.1:{self.server.server_port}"

    def set(self, series: str, value: float, kind: str = "") -> None:
        """``kind``: counter or gauge (the TYPE line); default counter for *_total."""
        name = series.split("{", 1)[0]
        with self._lock:
            self._samples[series] = value
            self._types.setdefault(
                name, kind or ("counter" if name.endswith("_total") else "gauge")
            )

    def text(self) -> bytes:
        with self._lock:
            self.scrapes += 1
            lines = []
            for name, kind in self._types.items():
                lines.append(f"# TYPE {name} {kind}")
                lines += [
                    f"{s} {v:g}" for s, v in self._samples.items() if s.split("{", 1)[0] == name
                ]
        return ("\n".join(lines) + "\n").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> StaticExporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
