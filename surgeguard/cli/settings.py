"""The stack runner's settings: every process's, in one class, because ``surgeguard up``
starts them all from one set of flags and variables."""

from __future__ import annotations

from surgeguard_controller.settings import ControllerSettings
from surgeguard_dashboard.settings import DashboardSettings
from surgeguard_target_app.settings import DemoSettings, WorkerSettings


class StackSettings(DemoSettings, WorkerSettings, ControllerSettings, DashboardSettings):
    """A replica, a worker, the controller and the dashboard on one machine."""
