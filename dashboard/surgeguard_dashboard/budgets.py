"""The shared budgets: each budgeted dependency's total, every replica's share of it
and its demand, and why the shares are where they are (the state's ``budgets``).

A budget is the calls in flight a shared dependency (a database's connections) honours
across all replicas; the controller divides it by demand (calls in flight + waiting)
and keeps the sum of the shares within it. ``Budget.parse_all`` reads them leniently
(a controller older than budgets sends none: nothing is drawn); the page draws them
with ``surgeguard_dashboard.budget_panel``. Pure; shares and totals are calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from surgeguard_dashboard.jsonread import floats, integer, ints, mapping
from surgeguard_dashboard.literal import literal


@dataclass(frozen=True)
class Budget:
    dependency: str
    total: int
    shares: Mapping[str, int] = field(default_factory=dict)  # replica -> calls
    demand: Mapping[str, float] = field(default_factory=dict)  # replica -> calls wanted
    reason: str = ""
    source: str = ""

    @property
    def handed_out(self) -> int:
        return sum(self.shares.values())

    @classmethod
    def parse_all(cls, raw: Any) -> dict[str, Budget]:
        budgets = {}
        for dependency, part in mapping(raw).items():
            b = mapping(part)
            total = integer(b.get("total"))
            if total is None:
                continue
            budgets[str(dependency)] = cls(
                str(dependency),
                total,
                ints(b.get("shares")),
                floats(b.get("demand")),
                str(b.get("reason") or ""),
                str(b.get("source") or ""),
            )
        return budgets


def rows(budget: Budget, replica: str | None = None) -> list[dict[str, Any]]:
    """One row per replica (``replica``: only that one): its share, its part of the
    total and its demand."""
    out = []
    for name, share in sorted(budget.shares.items()):
        if replica not in (None, name):
            continue
        demand = budget.demand.get(name)
        out.append(
            {
                "replica": name,
                "share": share,
                "of the budget": f"{share / budget.total:.0%}" if budget.total else "n/a",
                "demand": "not read this tick" if demand is None else f"{demand:.1f}",
            }
        )
    return out


def headline(budget: Budget) -> str:
    demand = sum(budget.demand.values())
    return (
        f"**{literal(budget.dependency)}**: {budget.handed_out} of {budget.total} slots handed out "
        f"to {len(budget.shares)} replicas · demand {demand:.1f} in all"
    )
