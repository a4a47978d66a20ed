"""A stand-in for ``surgeguard load`` in drill tests: fast, no Locust.

Takes the same flags, writes them (and whether it got the admin token) to
``OUT/args.json``, prints a progress line a second, and ends like the real one:
SIGTERM -> writes ``OUT/summary.json`` and exits 0. Its environment steers it:
``FAKE_LOAD_SECONDS`` (run this long instead of --duration), ``FAKE_LOAD_EXIT``
(fail at once with this code, after printing "boom"), ``FAKE_LOAD_IGNORE_TERM``
(ignore SIGTERM, so only SIGKILL ends it), ``FAKE_LOAD_CHAOS`` (``dep:multiplier``:
at start, set that chaos through its drill, ``PUT /api/v1/drills/<--drill-id>/chaos/
<dep>``, and put it back the same way when it ends, as ``slow_dependency`` does; a
failure of either is one line on stderr, as there).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import httpx


def drill_chaos(args: argparse.Namespace, token: str | None, multiplier: float) -> None:
    dependency = os.environ["FAKE_LOAD_CHAOS"].split(":")[0]
    url = f"{args.controller}/api/v1/drills/{args.drill_id}/chaos/{dependency}"
    body = {"latency_multiplier": multiplier, "error_rate": 0.0, "reason": "fake load"}
    try:
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.put(url, json=body, headers=headers, timeout=5, trust_env=False)
        print(f"chaos {dependency} x{multiplier:g}: {r.status_code}", flush=True)
    except httpx.HTTPError as exc:
        print(f"chaos {dependency} x{multiplier:g}: {exc!r}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--scenario", "--host", "--users", "--duration", "--out", "--controller"):
        parser.add_argument(flag)
    parser.add_argument("--no-marks", action="store_true")
    parser.add_argument("--drill-id")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    token = os.environ.get("SURGEGUARD_ADMIN_TOKEN")
    (out / "args.json").write_text(json.dumps({**vars(args), "token": token}))
    if code := int(os.environ.get("FAKE_LOAD_EXIT", "0")):
        print("starting", flush=True)
        print("boom: the target is unreachable", file=sys.stderr, flush=True)
        return code

    stopped = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    ignore = bool(os.environ.get("FAKE_LOAD_IGNORE_TERM"))
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else on_term)
    seconds = float(os.environ.get("FAKE_LOAD_SECONDS", args.duration))
    chaos = os.environ.get("FAKE_LOAD_CHAOS")
    if chaos:
        drill_chaos(args, token, float(chaos.split(":")[1]))
    started = time.monotonic()
    said = -1
    while not stopped and (elapsed := time.monotonic() - started) < seconds:
        if int(elapsed) > said:  # a progress line a second, like the real one
            said = int(elapsed)
            print(f"{args.scenario}: {said} s", flush=True)
        time.sleep(0.05)
    if chaos:
        drill_chaos(args, token, 1.0)
    (out / "summary.json").write_text(json.dumps({"stopped": stopped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
