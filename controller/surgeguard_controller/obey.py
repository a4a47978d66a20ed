"""Whether a replica obeys: does the control-document version it applied follow the
one the controller published? (Issue 16: pointed at a replica that did not read the
control plane, the controller logged ``queue_limit 40 -> 11 ... applied True`` forever.)

Pure: a state in, a state out, one step per tick in which the replica was read.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_APPLIED = " (replica does not apply the control plane: not applied)"


@dataclass(frozen=True)
class Obedience:
    """One replica's standing. ``applied``: the version it reports it applied
    (``surgeguard_control_plane_version``; None when it does not export it, and then it
    cannot be judged and counts as obeying); ``published``: the controller's version
    this tick; ``stuck_ticks``: ticks in a row it has been behind without moving towards
    it; ``since``: unix seconds it was first found not obeying (None while it obeys)."""

    applied: int | None
    published: int
    stuck_ticks: int = 0
    since: float | None = None
    obeying: bool = True


def follow(
    state: Obedience | None,
    applied: int | None,
    published: int,
    *,
    now: float,
    grace_ticks: int,
) -> Obedience:
    """The next standing after a tick that read the replica (``now``: unix seconds).

    A replica is behind while its applied version differs from the published one; it
    does not obey once it has been behind for ``grace_ticks`` ticks in a row without
    moving towards the published version. A replica that follows late (each tick one
    version behind, as through a slowly scraped Prometheus) moves every tick and obeys;
    one that reads another control plane, or refuses the documents, does not move."""
    if applied is None:
        return Obedience(None, published)
    behind = applied != published
    previous = state.applied if state is not None else None
    moved = previous is not None and previous < applied <= published
    stuck = (state.stuck_ticks if state is not None else 0) + 1 if behind and not moved else 0
    obeying = stuck < grace_ticks
    if obeying:
        since = None
    else:
        since = state.since if state is not None and state.since is not None else now
    return Obedience(applied, published, stuck, since, obeying)
