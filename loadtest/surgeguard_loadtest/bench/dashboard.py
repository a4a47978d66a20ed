"""Benchmark: one refresh of the dashboard with an hour of 1 s history on screen.

A real target and controller tick for a few seconds; one real tick record is then
copied into an hour of history (see ``surgeguard_loadtest.bench.history``). The dashboard app runs
under Streamlit's AppTest (the same script ``streamlit run`` executes) with the 1 h
window chosen; each measured rerun fetches what is new and redraws every chart, which
is at least what one refresh of the live fragment does, so it bounds it from above.

    python -m surgeguard_loadtest.bench.dashboard [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from streamlit.testing.v1 import AppTest

from surgeguard_loadtest.bench.history import stack_with_an_hour_of_history

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m surgeguard_loadtest.bench.dashboard", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args(argv)
    with stack_with_an_hour_of_history(args.replicas) as (ctl, _):
        os.environ["SURGEGUARD_CONTROLLER_URL"] = ctl
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        at.radio(key="window_min").set_value(60).run()  # the 1 h window
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            at.run()
            timings.append((time.perf_counter() - started) * 1000)
        assert not at.exception, at.exception
    timings.sort()
    print(
        f"dashboard rerun with 1 h of history ({args.replicas} replicas), {args.runs} runs: "
        f"median {statistics.median(timings):.0f} ms, max {timings[-1]:.0f} ms "
        f"(goal for one live refresh: at most 300 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
