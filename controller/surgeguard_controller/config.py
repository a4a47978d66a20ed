"""The controller's tunables, validated where they are built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from surgeguard.knobs import BULKHEAD_MAXIMUM, BULKHEAD_MINIMUM, DOOR_KNOB_SPECS
from surgeguard_controller.catalogue import Catalogue


@dataclass(frozen=True)
class ControllerConfig:
    slo_s: float = 0.25
    algorithm: str = "aimd"
    error_threshold: float = 0.05  # share of admitted answered 5xx (not 503) that is congestion
    failure_threshold: float = 0.05  # share of a dependency's calls timing out or failing
    inflation: float = 3.0  # dependency p99 over baseline x this = congested
    # ...and over baseline + this (seconds): for a 1 ms cache, event-loop jitter alone
    # triples the latency; that is not the dependency being overloaded.
    inflation_floor_s: float = 0.02
    baseline_drift: float = 0.05  # a dependency's healthy baseline may rise 5% a minute
    queue_timeout_share: float = 0.01  # queue timeouts per admitted that count as congestion
    auto_degrade: bool = False
    degrade_after_ticks: int = 5
    recover_after_ticks: int = 10
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # knob -> (min, max)
    headroom: float = 0.2  # aim admitted p99 this share below the SLO, [0, 0.5]
    backoff: float = 0.9  # AIMD's multiplicative cut, [0.5, 1)
    cooldown_s: float = 2.0  # no second cut this soon after one, seconds
    proportional: bool = True  # far over the SLO, cut by SLO / p99 (bounded to [0.5, backoff])
    # Event-loop lag that explains the latency: when admitted p99 is over target but
    # the loop's lag p99 is at least ``lag_share`` of it (0..1) while the replica's
    # process uses less than ``cpu_saturated`` cores (1.0 = one full core), the CPU is
    # taken by another process and a smaller limit cannot help: concurrency_limit holds
    # instead of being cut. From ``cpu_saturated`` up the lag is the replica's own
    # work and the cut proceeds. ``cpu_saturated = 0`` turns the hold off.
    lag_share: float = 0.5
    cpu_saturated: float = 0.8
    # The hold rule (issue 11): a cut of any knob needs evidence that the knob causes
    # the latency. False = the controller as it was before it (for side-by-side runs).
    # - Rejection work: at least ``rejection_min_per_s`` rejections per second and at
    #   least ``rejection_ratio`` times the admitted rate, with event-loop lag at least
    #   ``lag_share`` of admitted p99: the CPU is spent saying no, and a smaller limit
    #   (or queue) would only add rejections. concurrency_limit and queue_limit hold.
    # - Loop lag in a dependency's latency: a bulkhead whose p99 less the loop's lag p99
    #   is within its target holds (the loop, not the dependency, is slow).
    # - Futile cuts: after ``futile_cuts`` consecutive cuts of one knob for latency none
    #   of which lowered the latency by at least ``futile_margin`` (0..1), the knob goes
    #   back to its value before them and is not cut for latency again for
    #   ``futile_hold_s`` seconds.
    #   The lag a request carries is ``loop_hops`` x the loop's lag p99: a request
    #   waits for the loop at each hop (its read, the door, each dependency call, the
    #   response), so a 50 ms timer's lag understates it (measured: lag p99 40 ms with
    #   admitted p99 ~200 ms that the limit did not move).
    hold_rule: bool = True
    loop_hops: float = 4.0
    # Three requests turned away or held per admitted one: with the penalty box a storm
    # costs a few door decisions per admitted request, not hundreds (measured at the
    # start of a 2,000-connection storm: 965 rejected + 965 held/s vs 287 admitted/s,
    # lag 91 ms, p99 267 ms, and the limit was halved for it).
    rejection_ratio: float = 3.0
    rejection_min_per_s: float = 1000.0
    futile_cuts: int = 2
    futile_margin: float = 0.05
    futile_hold_s: float = 30.0
    # The bottleneck's name (issue 16): a dependency's latency inflation counts only
    # while at least ``bottleneck_busy`` (0..1) of its slots are in use or it fails; one
    # under ``bottleneck_busy`` is never named while another is at
    # ``bottleneck_saturated`` or more; and a new name replaces the current one only
    # after the current one has been out of the lead for ``bottleneck_hold_ticks`` ticks.
    bottleneck_hold_ticks: int = 3
    bottleneck_busy: float = 0.5
    bottleneck_saturated: float = 0.8
    # A replica whose applied control-document version has not followed the published
    # one for ``obey_grace_ticks`` ticks does not obey: its decisions are not applied.
    obey_grace_ticks: int = 3
    # What the replicas declare (a one-element box, so the frozen config can follow
    # deployments: see ``learn``).
    known: list[Catalogue] = field(default_factory=lambda: [Catalogue()], compare=False)

    @property
    def target_s(self) -> float:
        """What admitted p99 is steered under: the SLO less the headroom, seconds."""
        return self.slo_s * (1 - self.headroom)

    @property
    def catalogue(self) -> Catalogue:
        """What the replicas declare, as last read (``learn`` replaces it)."""
        return self.known[0]

    def learn(self, catalogue: Catalogue) -> None:
        """The replicas' declarations as read this tick (the one thing in a config
        that changes while the controller runs: replicas are deployed under it)."""
        self.known[0] = catalogue

    def bounds_of(self, knob: str) -> tuple[int, int]:
        """The range the controller moves ``knob`` in: what the replicas declare,
        narrowed by the operator's ``bounds``. A knob no replica has declared (yet)
        gets a bulkhead's widest range; moves of it are not applied by anyone."""
        spec = self.catalogue.knob_specs.get(knob)
        low, high = (spec.minimum, spec.maximum) if spec else (BULKHEAD_MINIMUM, BULKHEAD_MAXIMUM)
        if knob in self.bounds:
            want_low, want_high = self.bounds[knob]
            low, high = max(low, want_low), min(high, want_high)
            if low > high:  # the operator's range is outside the declared one
                low = high = min(max(want_low, low), high)
        return low, high

    def __post_init__(self) -> None:
        for knob, (low, high) in self.bounds.items():
            door = DOOR_KNOB_SPECS.get(knob)
            floor, ceiling = (door.minimum, door.maximum) if door else (0, BULKHEAD_MAXIMUM)
            if not floor <= low <= high <= ceiling:
                raise ValueError(
                    f"bounds of {knob} must be within [{floor}, "
                    f"{ceiling}] with min <= max, got [{low}, {high}]"
                )
        if self.slo_s <= 0:
            raise ValueError(f"slo_s must be > 0 seconds, got {self.slo_s}")
        if not 0 <= self.headroom <= 0.5:
            raise ValueError(f"headroom must be in [0, 0.5], got {self.headroom}")
        if self.inflation <= 1:
            raise ValueError(f"inflation must be > 1, got {self.inflation}")
        if not 0 < self.lag_share <= 1:
            raise ValueError(f"lag_share must be in (0, 1], got {self.lag_share}")
        if self.cpu_saturated < 0:
            raise ValueError(f"cpu_saturated must be >= 0 cores, got {self.cpu_saturated}")
        if not 1 <= self.loop_hops <= 100:
            raise ValueError(f"loop_hops must be in [1, 100], got {self.loop_hops}")
        if self.rejection_ratio < 1:
            raise ValueError(
                f"rejection_ratio must be >= 1 (rejected per admitted), got {self.rejection_ratio}"
            )
        if self.rejection_min_per_s < 0:
            raise ValueError(
                f"rejection_min_per_s must be >= 0 per second, got {self.rejection_min_per_s}"
            )
        if self.futile_cuts < 1:
            raise ValueError(f"futile_cuts must be >= 1 cuts, got {self.futile_cuts}")
        if not 0 <= self.futile_margin < 1:
            raise ValueError(f"futile_margin must be in [0, 1), got {self.futile_margin}")
        if self.futile_hold_s < 0:
            raise ValueError(f"futile_hold_s must be >= 0 seconds, got {self.futile_hold_s}")
        for name in ("bottleneck_hold_ticks", "obey_grace_ticks"):
            ticks = getattr(self, name)
            if isinstance(ticks, bool) or not isinstance(ticks, int) or not 1 <= ticks <= 1000:
                raise ValueError(f"{name} must be in [1, 1000] ticks, got {ticks!r}")
        if not 0 < self.bottleneck_busy <= self.bottleneck_saturated <= 1:
            raise ValueError(
                "bottleneck_busy and bottleneck_saturated must satisfy 0 < busy <= "
                f"saturated <= 1, got {self.bottleneck_busy} and {self.bottleneck_saturated}"
            )
        for name in ("error_threshold", "failure_threshold", "queue_timeout_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
