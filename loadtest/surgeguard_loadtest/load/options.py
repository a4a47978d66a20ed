"""What one load run is told: the scenario, the target, where the reports go, and how
it is judged. Shared by the runner (``run.py``) and what it calls (``controller_calls.py``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from surgeguard_loadtest import verdict
from surgeguard_loadtest.scenarios import Scenario
from surgeguard_loadtest.storm.phase import StormOptions


@dataclass
class LoadOptions:
    scenario: Scenario
    host: str
    out: Path
    controller_url: str | None = None
    admin_token: str | None = None
    client_keys: str = "demo-key"
    processes: int = 1  # Locust worker processes (forked); 1 = one process
    marks: bool = True  # announce start and end to the controller (for chart markers)
    drill_id: str | None = None  # the controller's drill this run is (its chaos goes there)
    quiet: bool = False
    user_classes: tuple[str, ...] = ()  # Locust user classes; () = by the population
    keep_scrapes: bool = False  # keep every /metrics scrape (returned as "scrapes")
    storm: StormOptions = field(default_factory=StormOptions)  # for a scenario with a storm
    slo_p99_ms: float = 250.0  # the admitted p99 the run is judged against
    thresholds: verdict.Thresholds = field(default_factory=verdict.Thresholds)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
