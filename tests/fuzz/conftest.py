"""The fuzz tests run the real controller and the real demo replica."""

from __future__ import annotations

from tests.controller.conftest import start_controller  # noqa: F401 - fixtures, re-exported
from tests.target_app.conftest import start_target  # noqa: F401
