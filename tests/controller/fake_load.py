"""A stand-in for ``surgeguard load`` in drill tests: fast, no Locust.

Takes the same flags, writes them (and whether it got the admin token) to
``OUT/args.json``, prints a progress line a second, and ends like the real one:
SIGTERM -> writes ``OUT/summary.json`` and exits 0. Its environment steers it:
``FAKE_LOAD_SECONDS`` (run this long instead of --duration), ``FAKE_LOAD_EXIT``
(fail at once with this code, after printing "boom"), ``FAKE_LOAD_IGNORE_TERM``
(ignore SIGTERM, so only SIGKILL ends it).
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


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--scenario", "--host", "--users", "--duration", "--out", "--controller"):
        parser.add_argument(flag)
    parser.add_argument("--no-marks", action="store_true")
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
    started = time.monotonic()
    said = -1
    while not stopped and (elapsed := time.monotonic() - started) < seconds:
        if int(elapsed) > said:  # a progress line a second, like the real one
            said = int(elapsed)
            print(f"{args.scenario}: {said} s", flush=True)
        time.sleep(0.05)
    (out / "summary.json").write_text(json.dumps({"stopped": stopped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
