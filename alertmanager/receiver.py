"""The stack's stand-in alert receiver: an Alertmanager webhook that logs what it gets.

Alertmanager POSTs one JSON document per notification (a group of alerts, see
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config). This prints
one line per alert to stdout (`docker compose logs alert-log`) and keeps the latest
notifications in memory, served as JSON at ``GET /received`` (newest last), so a
person or a test can see exactly what would have reached Slack or PagerDuty.

Standard library only: compose runs it in the plain Python image, mounted read-only.

    python alertmanager/receiver.py --host 0.0.0.0 --port 9095

``GET /healthz`` answers 200 (the compose health check). Any POST path is accepted;
the path is logged, so one receiver can stand in for several (``/critical``,
``/warning``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEEP = 200  # notifications kept for GET /received
MAX_BODY = 1 << 20  # bytes; Alertmanager's groups are far smaller


class Inbox:
    """The latest notifications, each as Alertmanager sent it plus the path it came to."""

    def __init__(self, keep: int = KEEP) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, path: str, notification: dict[str, Any]) -> None:
        with self._lock:
            self._items.append({"path": path, "notification": notification})

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


def describe(path: str, notification: dict[str, Any]) -> list[str]:
    """One readable line per alert of a notification."""
    lines = []
    for alert in notification.get("alerts", []):
        labels = dict(alert.get("labels", {}))
        name = labels.pop("alertname", "?")
        severity = labels.pop("severity", "-")
        where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        summary = alert.get("annotations", {}).get("summary", "")
        status = str(alert.get("status", "?")).upper()
        lines.append(f"{path} {status} [{severity}] {name} {{{where}}} {summary}".rstrip())
    return lines


def make_handler(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._answer(413 if length else 400, {"error": "bad body length"})
                return
            try:
                notification = json.loads(self.rfile.read(length))
            except ValueError:
                self._answer(400, {"error": "not JSON"})
                return
            if not isinstance(notification, dict):
                self._answer(400, {"error": "not a JSON object"})
                return
            inbox.add(self.path, notification)
            for line in describe(self.path, notification):
                print(line, flush=True)
            self._answer(200, {"ok": True})

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"ok": True})
            elif self.path == "/received":
                self._answer(200, {"received": inbox.items()})
            else:
                self._answer(404, {"error": "not found"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per alert is printed instead of one per request

    return Handler


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9095, help="port to listen on")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Inbox()))
    # As PID 1 of a container, SIGTERM would be ignored without a handler.
    signal.signal(signal.SIGTERM, _exit)
    print(f"alert receiver listening on {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
