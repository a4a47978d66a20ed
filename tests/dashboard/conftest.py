"""A real target and a real controller (real uvicorn, real Redis) for the dashboard,
with a little traffic and a few control ticks behind them so state and history exist."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.controller.conftest import (  # noqa: F401 - fixtures, re-exported
    AUTH,
    TOKEN,
    RunningController,
    StartController,
    start_controller,
)
from tests.target_app.conftest import (  # noqa: F401 - a fixture, re-exported
    API_KEY,
    RunningTarget,
    StartTarget,
    start_target,
)

APP = Path(__file__).resolve().parents[2] / "dashboard" / "surgeguard_dashboard" / "app.py"


@dataclass
class Stack:
    target: RunningTarget
    controller: RunningController

    @property
    def url(self) -> str:
        return self.controller.url

    def traffic_and_ticks(self, ticks: int = 3, requests: int = 15) -> None:
        """Some requests between ticks: the first tick only sets the baseline."""
        with httpx.Client(base_url=self.target.url, headers=API_KEY, timeout=10) as client:
            self.controller.tick()
            for _ in range(ticks):
                for n in range(requests):
                    client.get("/feed" if n % 2 else f"/items/{n}")
                self.controller.tick()

    def get(self, path: str) -> object:
        return httpx.get(f"{self.url}/api/v1{path}", timeout=10).json()


# The fixtures imported above are requested by name here (hence F811).
@pytest.fixture
def stack(
    start_target: StartTarget,  # noqa: F811
    start_controller: StartController,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """The dashboard reads the controller's URL from SURGEGUARD_CONTROLLER_URL, as
    ``surgeguard dashboard --controller URL`` hands it over."""
    target = start_target()
    running = Stack(target, start_controller([target.url]))
    running.traffic_and_ticks()
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", running.url)
    yield running
