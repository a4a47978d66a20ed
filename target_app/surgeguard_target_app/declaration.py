"""What the demo service declares: its four dependencies (with the bulkhead slots each
starts with) and its two degradation modes of its own. The door's modes
(``shed_sheddable``, ``read_only``) come with the library."""

from __future__ import annotations

from surgeguard.declaration import Declaration, Dependency
from surgeguard.modes import ModeSpec

RECOMMENDATIONS_OFF = "recommendations_off"
SERVE_STALE = "serve_stale"

DEMO = Declaration(
    dependencies=(
        Dependency("db", slots=16, description="the shared database"),
        Dependency("cache", slots=64, description="the remote cache behind the read-through"),
        Dependency("recommendations", slots=8, description="the recommendations service"),
        Dependency("payments", slots=8, description="the payments provider"),
    ),
    modes=(
        ModeSpec(
            RECOMMENDATIONS_OFF,
            "Serve the feed without calling the recommendations service.",
            auto_degrade=True,
        ),
        ModeSpec(
            SERVE_STALE, "Serve cached data even when stale; skip the db when any copy exists."
        ),
    ),
)
DEPENDENCIES: tuple[str, ...] = DEMO.dependency_names
