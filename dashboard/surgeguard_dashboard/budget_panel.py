"""The shared budgets on the page: each budget's total, the replicas' shares and demand
(a table), and the controller's reason; a warning when the shares add up to more than
the total (a budget too small for every replica's minimum)."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from surgeguard_dashboard.budgets import Budget, headline, rows
from surgeguard_dashboard.literal import literal


def budget_panel(budgets: Mapping[str, Budget], replica: str | None = None) -> None:
    """Each budget: its total, the shares and demand of the replicas, the reason."""
    if not budgets:
        return
    st.subheader("Shared budgets")
    for dependency in sorted(budgets):
        budget = budgets[dependency]
        st.markdown(headline(budget))
        if budget.handed_out > budget.total:
            st.warning(
                f"The shares of {literal(dependency)} add up to {budget.handed_out}, over its "
                f"budget of {budget.total}: {literal(budget.reason)}",
                icon=":material/warning:",
            )
        table = rows(budget, replica)
        if table:
            st.table(table, hide_index=True)
        st.caption(f"Why: {literal(budget.reason)}" if budget.reason else "No division yet.")
