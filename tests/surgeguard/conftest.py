"""The library's tests mostly build their own small apps; the metric-name contract is
checked against the demo's real replica, started by the target app's fixture."""

from tests.target_app.conftest import start_target  # noqa: F401 - a fixture, re-exported
