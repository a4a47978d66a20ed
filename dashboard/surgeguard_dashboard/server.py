"""Run the dashboard: ``streamlit run .../surgeguard_dashboard/app.py`` in place of this process.

The process replaces itself (``exec``) with Streamlit's server, so whoever started it
(``surgeguard up``, a container) supervises and stops the server by this same pid.
The controller's URL and the refresh period reach the app as ``SURGEGUARD_*``
variables; the admin token is removed from its environment, since operators type it
into the page and the server has no use for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from surgeguard_dashboard.settings import DashboardSettings

APP = Path(__file__).with_name("app.py")
HEALTH_PATH = "/_stcore/health"  # Streamlit's own health check: 200 "ok"


def streamlit_argv(settings: DashboardSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        settings.host,
        "--server.port",
        str(settings.dashboard_port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def streamlit_env(settings: DashboardSettings, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != "SURGEGUARD_ADMIN_TOKEN"}
    env["SURGEGUARD_CONTROLLER_URL"] = settings.controller_url
    env["SURGEGUARD_DASHBOARD_REFRESH_MS"] = str(settings.dashboard_refresh_ms)
    # The app imports this very package: make it importable from wherever it lives
    # (a checkout or site-packages), whatever the working directory.
    root = str(APP.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
    return env


def serve(settings: DashboardSettings) -> int:
    """Never returns: the process becomes the Streamlit server."""
    print(
        f"dashboard on http://{settings.host}:{settings.dashboard_port} reading the "
        f"controller at {settings.controller_url} every {settings.dashboard_refresh_ms} ms",
        flush=True,
    )
    argv = streamlit_argv(settings)
    os.execve(argv[0], argv, streamlit_env(settings, dict(os.environ)))
