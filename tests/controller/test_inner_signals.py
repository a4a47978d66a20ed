"""The controller reads a replica's inner limit (issue 14, item 1) into ``Signals``:
the value of ``surgeguard_inner_limit``, NaN from a replica that does not export it,
and it reaches ``/api/v1/state`` with the other signals (null when NaN)."""

from __future__ import annotations

import json
import math

from surgeguard import metric_names as names
from surgeguard_controller.records import jsonable
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import compute

BASE = f"{names.CONCURRENCY_LIMIT} 40\n{names.INFLIGHT} 3\n"


def test_the_inner_limit_is_read_and_nan_when_not_exported() -> None:
    before = Scrape.from_text(BASE, 0.0)
    with_inner = compute(
        "r1", before, Scrape.from_text(BASE + f"{names.INNER_LIMIT} 12\n", 1.0), slo_s=0.25
    )
    assert with_inner.inner_limit == 12.0 and with_inner.concurrency_limit == 40.0
    older = compute("r1", before, Scrape.from_text(BASE, 1.0), slo_s=0.25)
    assert math.isnan(older.inner_limit)
    assert json.loads(json.dumps(jsonable(with_inner)))["inner_limit"] == 12.0
