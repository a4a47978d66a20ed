"""The db budget that docker-compose.yml and deploy/kubernetes/ declare, read against
the Postgres they run (issue 15): ``SURGEGUARD_BUDGETS``'s db total must fit in
``max_connections`` less the connections kept for others."""

from __future__ import annotations

# Connections no replica's pool may take: Postgres's superuser_reserved_connections (3,
# its default) and 5 for schema set-up, monitoring and an operator's psql. Both files
# say so beside the numbers.
RESERVE = 8


def db_budget(budgets: str) -> int:
    """The db's total from ``db:32,payments:8`` (KeyError when the db has none)."""
    pairs = dict(part.strip().split(":", 1) for part in budgets.split(",") if part.strip())
    return int(pairs["db"])


def max_connections(args: list[str]) -> int:
    """``max_connections`` from a postgres command line's ``-c name=value`` settings."""
    settings = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args[:-1]) if arg == "-c")
    return int(settings["max_connections"])


def fits(budgets: str, args: list[str]) -> bool:
    """Whether the db budget is positive and within max_connections less the reserve."""
    return 0 < db_budget(budgets) <= max_connections(args) - RESERVE
