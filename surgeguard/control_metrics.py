"""What a replica says about its control plane and its declaration in ``/metrics``.

The controller and the dashboard learn from these which knobs exist with which
bounds and which modes an app has (``surgeguard_knob_*``, ``surgeguard_mode_info``);
the rest tells how fresh the replica's knobs are. Everything is read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge

from surgeguard import metric_names as names
from surgeguard.controlplane import ControlState
from surgeguard.declaration import Declaration


def export_control(
    registry: CollectorRegistry,
    *,
    replica: str,
    staleness_s: Callable[[], float],
    applied_version: Callable[[], float],
    modes_on: Callable[[], frozenset[str]],
    knobs: Callable[[], Mapping[str, int]],
    declaration: Declaration,
    slo_s: float = 0.25,
    control: Callable[[], ControlState] | None = None,
) -> None:
    """``control``: the document applied; its pins and autopilot are exported so a
    controller that lost the document and its own memory can restore them."""
    Gauge(
        names.SLO_SECONDS,
        "The admitted p99 objective this replica's latency buckets are cut at, seconds "
        "(a controller steering to another one is told so).",
        registry=registry,
    ).set(slo_s)
    Gauge(
        names.CONTROL_PLANE_STALENESS_SECONDS,
        "Seconds since this replica last read the control plane (fail static meanwhile).",
        registry=registry,
    ).set_function(staleness_s)
    Gauge(
        names.CONTROL_PLANE_VERSION,
        "Version of the control document applied (-1: none yet).",
        registry=registry,
    ).set_function(applied_version)
    Gauge(
        names.REPLICA_INFO,
        "Always 1; names this replica (the control plane's per-replica key).",
        ["replica"],
        registry=registry,
    ).labels(replica).set(1)
    mode_active = Gauge(
        names.MODE_ACTIVE, "1 while a degradation mode is on.", ["mode"], registry=registry
    )
    mode_info = Gauge(
        names.MODE_INFO,
        "Always 1; a degradation mode this replica knows: what it does, whether the "
        "library acts on it at the door, whether the controller may switch it on, and "
        "its place in the declaration (the auto-degrade ladder's order).",
        ["mode", "description", "door", "auto_degrade", "order"],
        registry=registry,
    )
    for order, mode in enumerate(declaration.all_modes.values()):
        mode_active.labels(mode.name).set_function(_member(mode.name, modes_on))
        mode_info.labels(
            mode.name, mode.description, _flag(mode.door), _flag(mode.auto_degrade), str(order)
        ).set(1)
    minimum = Gauge(
        names.KNOB_MINIMUM, "Lowest value a knob may take.", ["knob"], registry=registry
    )
    maximum = Gauge(
        names.KNOB_MAXIMUM, "Highest value a knob may take.", ["knob"], registry=registry
    )
    default = Gauge(
        names.KNOB_DEFAULT,
        "A knob's value at start, before any control document.",
        ["knob"],
        registry=registry,
    )
    value = Gauge(names.KNOB_VALUE, "A knob's value now, as applied.", ["knob"], registry=registry)
    info = Gauge(
        names.KNOB_INFO,
        "Always 1; a knob this replica has, with its unit and what it limits.",
        ["knob", "unit", "description"],
        registry=registry,
    )
    budget = Gauge(
        names.DEPENDENCY_BUDGET,
        "Calls in flight the dependency honours across ALL replicas (its budget, which "
        "the controller divides among them).",
        ["dependency"],
        registry=registry,
    )
    for dependency, total in declaration.budgets.items():
        budget.labels(dependency).set(total)
    for name, spec in declaration.knob_specs.items():
        minimum.labels(name).set(spec.minimum)
        maximum.labels(name).set(spec.maximum)
        default.labels(name).set(spec.default)
        value.labels(name).set_function(_knob(name, knobs))
        info.labels(name, spec.unit, spec.description).set(1)
    if control is not None:
        pinned = Gauge(
            names.CONTROL_PINNED,
            "1 while the applied control document pins a knob (the controller may not move it).",
            ["knob"],
            registry=registry,
        )
        for name in declaration.knob_specs:
            pinned.labels(name).set_function(_pinned(name, control))
        Gauge(
            names.CONTROL_AUTOPILOT,
            "1 while the applied control document has the controller's autopilot on.",
            registry=registry,
        ).set_function(lambda: float(control().autopilot))


def _flag(on: bool) -> str:
    return "true" if on else "false"


def _member(name: str, modes_on: Callable[[], frozenset[str]]) -> Callable[[], float]:
    return lambda: float(name in modes_on())


def _pinned(name: str, control: Callable[[], ControlState]) -> Callable[[], float]:
    return lambda: float(name in control().pins)


def _knob(name: str, knobs: Callable[[], Mapping[str, int]]) -> Callable[[], float]:
    return lambda: float(knobs().get(name, 0))
