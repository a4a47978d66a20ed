"""What the controller knows of each replica, from its reads: one ``ReplicaView`` each.

Each tick ``ReplicaViews.update`` turns the replicas' reads (``Scrape``) into views: the
last ``reads_kept`` reads per target make the window whose ``Signals`` the controller
decides from, and the aggregate of all windows names the bottleneck. While reading it
also checks what each replica says of itself: whether it applies the published control
document (issue 16, ``surgeguard_controller.obey``), what it reports it enforces (the
control document is rebuilt from that when Redis lost it, issue 13), and whether it
declares the SLO the controller steers to. The per-replica series of
``ControllerMetrics`` are set here and removed here when a replica is forgotten.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from surgeguard import metric_names as names
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.decide import current_knobs
from surgeguard_controller.metrics import ControllerMetrics
from surgeguard_controller.obey import Obedience, follow
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import Signals, aggregate, compute, stale

log = logging.getLogger("controller")


@dataclass
class ReplicaView:
    target: str
    replica: str
    signals: Signals
    knobs: dict[str, int] = field(default_factory=dict)
    last_ok: float = -math.inf  # monotonic seconds of the last good read
    obedience: Obedience | None = None  # None until it was read once
    # What it reports it enforces (its applied version, knob values, modes on).
    applied_version: int = -1
    enforced_knobs: dict[str, int] = field(default_factory=dict)
    enforced_modes: frozenset[str] = frozenset()
    # Its document's pins and autopilot (None: it does not export them).
    reported_pins: frozenset[str] | None = None
    reported_autopilot: bool | None = None

    @property
    def obeying(self) -> bool:
        return self.obedience is None or self.obedience.obeying

    def obedience_json(self) -> dict[str, Any]:
        o = self.obedience
        return {
            "applied_version": o.applied if o is not None else None,
            "published_version": o.published if o is not None else None,
            "obeying": self.obeying,
            "disobeying_since": o.since if o is not None else None,
        }


# One replica's window this tick: its view, the read the window starts at, the newest.
Window = tuple[ReplicaView, Scrape, Scrape]


class ReplicaViews:
    """Every replica read at least once and not forgotten, by target URL."""

    def __init__(
        self,
        config: ControllerConfig,
        metrics: ControllerMetrics,
        *,
        reads_kept: int,
        wall: Callable[[], float],
    ) -> None:
        """``config``: its SLO and obedience grace are read at each tick; ``reads_kept``:
        reads kept per target (a window spans the oldest to the newest); ``wall``: unix
        seconds (when a replica was first found not obeying)."""
        self._config = config
        self._metrics = metrics
        self._reads_kept = reads_kept
        self._wall = wall
        self.by_target: dict[str, ReplicaView] = {}
        self.aggregate: Signals | None = None  # all windows of the last tick together
        self.reasons: dict[str, dict[str, str]] = {}  # replica -> knob -> latest reason
        self._reads: dict[str, deque[Scrape]] = {}
        self._slo_warned: set[str] = set()  # replicas told about a different SLO

    def update(self, scrapes: Mapping[str, Scrape | None], published: int) -> list[Window]:
        """Take this tick's reads (None: the target could not be read); ``published``:
        the control-document version the replicas should apply. The windows of the
        replicas read anew (a first read only sets the baseline)."""
        windows = []
        for target, scrape in scrapes.items():
            view = self.by_target.get(target)
            if scrape is None:
                self._metrics.scrape_errors.labels(target).inc()
                if view is not None:
                    view.signals = stale(view.replica)
                    self._metrics.stale.labels(view.replica).set(1)
                continue
            replica = next(iter(scrape.label_values(names.REPLICA_INFO, "replica")), target)
            reads = self._reads.setdefault(target, deque(maxlen=self._reads_kept))
            before = reads[0] if reads else None
            new = not reads or scrape.at > reads[-1].at
            reads.append(scrape)
            if view is None:
                view = self.by_target[target] = ReplicaView(target, replica, stale(replica))
            view.replica, view.last_ok = replica, scrape.at
            _note_enforced(view, scrape)
            self._metrics.stale.labels(replica).set(0)
            self._check_slo(view, scrape)
            if new:
                self._judge_obedience(view, scrape, published)
            if before is None or scrape.at <= before.at:
                continue  # the first read only sets the baseline
            view.signals = compute(replica, before, scrape, slo_s=self._config.slo_s)
            view.knobs = current_knobs(view.signals)
            self._metrics.p99.labels(replica).set(view.signals.p99_s)
            for knob, value in view.knobs.items():
                self._metrics.knob.labels(replica, knob).set(value)
            windows.append((view, before, scrape))
        self.aggregate = (
            aggregate([(b, n) for _, b, n in windows], slo_s=self._config.slo_s)
            if windows
            else None
        )
        return windows

    def forget(self, target: str) -> ReplicaView | None:
        """Forget the replica read at ``target`` (it left): its view, reads, reasons and
        series. Its view, or None when it was never read."""
        view = self.by_target.pop(target, None)
        self._reads.pop(target, None)
        if view is None:
            self._metrics.scrape_errors.remove(target)
            return None
        self._metrics.forget(view.replica, target, {*view.knobs, *view.enforced_knobs})
        self.reasons.pop(view.replica, None)
        return view

    def highest_applied(self) -> int:
        """The highest control-document version any replica reports it applies."""
        return max((v.applied_version for v in self.by_target.values()), default=-1)

    def staleness(self, now: float) -> dict[str, float]:
        """Seconds since each replica was last read successfully (``now``: monotonic
        seconds)."""
        return {v.replica: max(0.0, now - v.last_ok) for v in self.by_target.values()}

    def _check_slo(self, view: ReplicaView, scrape: Scrape) -> None:
        """Say once when a replica's own objective is not the one steered to: its
        buckets are cut at its SLO, so goodput and p99 near the controller's are off."""
        if not any(name == names.SLO_SECONDS for name, _ in scrape.samples):
            return
        theirs, ours = scrape.total(names.SLO_SECONDS), self._config.slo_s
        differs = abs(theirs - ours) > 1e-3 * ours
        if differs and view.replica not in self._slo_warned:
            log.warning(
                "replica %s declares an SLO of %.0f ms, the controller steers to %.0f ms: "
                "give both the same SURGEGUARD_SLO_P99_MS",
                view.replica,
                theirs * 1000,
                ours * 1000,
            )
            self._slo_warned.add(view.replica)
        elif not differs:
            self._slo_warned.discard(view.replica)

    def _judge_obedience(self, view: ReplicaView, scrape: Scrape, published: int) -> None:
        applied = (
            int(scrape.total(names.CONTROL_PLANE_VERSION))
            if any(name == names.CONTROL_PLANE_VERSION for name, _ in scrape.samples)
            else None
        )
        was = view.obeying
        view.obedience = follow(
            view.obedience,
            applied,
            published,
            now=self._wall(),
            grace_ticks=self._config.obey_grace_ticks,
        )
        self._metrics.obeying.labels(view.replica).set(1 if view.obeying else 0)
        if was != view.obeying:
            if view.obeying:
                log.info("replica %s applies the control plane again", view.replica)
            else:
                log.warning(
                    "replica %s does not apply the control plane: it applied version %s, "
                    "the controller published %d; its moves are not applied",
                    view.replica,
                    applied,
                    published,
                )


def _note_enforced(view: ReplicaView, scrape: Scrape) -> None:
    """What the replica reports it enforces (to rebuild a lost document from)."""
    if any(name == names.CONTROL_PLANE_VERSION for name, _ in scrape.samples):
        view.applied_version = int(scrape.total(names.CONTROL_PLANE_VERSION))
    view.enforced_knobs = {k: int(v) for k, v in scrape.by_label(names.KNOB_VALUE, "knob").items()}
    view.enforced_modes = frozenset(
        m for m, on in scrape.by_label(names.MODE_ACTIVE, "mode").items() if on >= 1
    )
    pinned = scrape.by_label(names.CONTROL_PINNED, "knob")
    exported = {name for name, _ in scrape.samples}
    view.reported_pins = frozenset(k for k, on in pinned.items() if on >= 1) if pinned else None
    view.reported_autopilot = (
        scrape.total(names.CONTROL_AUTOPILOT) >= 1 if names.CONTROL_AUTOPILOT in exported else None
    )
