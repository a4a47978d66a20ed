"""The shared budgets on the page (issue 15): Streamlit's AppTest over a real controller
dividing the db's budget between two real replicas (real Redis, real uvicorn) shows
the total, each replica's share and demand, and the controller's reason; and the
panel's rows and warnings, pure."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from surgeguard_dashboard.budgets import Budget, headline, rows
from tests.dashboard.conftest import API_KEY, APP, StartController, StartTarget


def test_the_page_shows_each_replicas_share_of_the_db_budget(
    start_target: StartTarget,
    start_controller: StartController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = start_target(replica_id="replica-a", budgets="db:12")
    b = start_target(replica_id="replica-b", budgets="db:12")
    ctl = start_controller([a.url, b.url])
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", ctl.url)
    with httpx.Client(headers=API_KEY, timeout=10) as client:
        ctl.tick()  # the first read only sets the baseline
        for tick in range(3):
            for n in range(10):
                client.get(f"{a.url}/items/{1000 * tick + n + 1}")  # a cache miss: a db call
            ctl.tick()
    state: Any = httpx.get(f"{ctl.url}/api/v1/state", timeout=10).json()
    budget = state["budgets"]["db"]
    assert budget["total"] == 12 and set(budget["shares"]) == {"replica-a", "replica-b"}

    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Shared budgets" in [h.value for h in at.subheader]
    handed = sum(budget["shares"].values())
    assert f"**db**: {handed} of 12 slots handed out to 2 replicas" in " ".join(
        m.value for m in at.markdown
    )
    table = next(t.value for t in at.table if "share" in t.value.columns)
    assert list(table["replica"]) == ["replica-a", "replica-b"]
    assert list(table["share"]) == [budget["shares"]["replica-a"], budget["shares"]["replica-b"]]
    why = [c.value for c in at.caption if c.value.startswith("Why: budget db 12")]
    assert why, [c.value for c in at.caption]


def test_rows_and_the_headline_say_share_part_and_demand() -> None:
    budget = Budget.parse_all(
        {
            "db": {
                "total": 12,
                "source": "replicas",
                "shares": {"b": 3, "a": 8},
                "demand": {"a": 9.26},
                "reason": "budget db 12 over 2 replicas",
            },
            "broken": {"shares": {"a": 1}},  # no total: not a budget
        }
    )
    assert list(budget) == ["db"]
    db = budget["db"]
    assert rows(db) == [
        {"replica": "a", "share": 8, "of the budget": "67%", "demand": "9.3"},
        {"replica": "b", "share": 3, "of the budget": "25%", "demand": "not read this tick"},
    ]
    assert [r["replica"] for r in rows(db, "b")] == ["b"]
    assert headline(db) == "**db**: 11 of 12 slots handed out to 2 replicas · demand 9.3 in all"
    assert Budget.parse_all(None) == {}
