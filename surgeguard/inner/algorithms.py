"""The inner loop's limit algorithms, by name: pure per-window steps, no clock, no I/O.

``SURGEGUARD_INNER_LOOP`` names one (``off``: no inner loop); ``SURGEGUARD_INNER_PARAMS``
sets its parameters as ``name=value,...`` (the field names of its class below, units in
their names). Each sees one ``Window`` and returns the next limit within the window's
[floor, ceiling]:

- ``aimd`` (``surgeguard.inner.aimd.Aimd``): surgeguard's own, on the window's p90
  against the target the controller steers to (the SLO less its headroom);
- ``netflix-aimd``, ``vegas``, ``gradient2`` (``surgeguard.inner.netflix``): Netflix
  concurrency-limits' AIMDLimit, VegasLimit and Gradient2Limit, windowed;
- ``envoy-gradient`` (``surgeguard.inner.envoy``): Envoy's adaptive concurrency
  gradient controller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from surgeguard.inner.aimd import Aimd
from surgeguard.inner.envoy import EnvoyGradient
from surgeguard.inner.netflix import Gradient2, NetflixAimd, Vegas
from surgeguard.inner.window import InnerAlgorithm, Window

__all__ = ["ALGORITHMS", "OFF", "InnerAlgorithm", "Window", "build_algorithm", "parse_params"]

OFF = "off"
_CLASSES: dict[str, type] = {
    cls.name: cls for cls in (Aimd, NetflixAimd, Vegas, EnvoyGradient, Gradient2)
}
ALGORITHMS: tuple[str, ...] = tuple(_CLASSES)


def parse_params(text: str) -> dict[str, float]:
    """``"timeout_s=0.25,backoff=0.9"`` as ``{"timeout_s": 0.25, "backoff": 0.9}``;
    raises ``ValueError`` naming the bad entry."""
    params: dict[str, float] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not name:
            raise ValueError(f"{entry!r} is not name=value (timeout_s=0.25)")
        if name in params:
            raise ValueError(f"{name!r} is given twice")
        try:
            params[name] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number") from None
    return params


def parameter_names(name: str) -> tuple[str, ...]:
    """The parameters algorithm ``name`` takes (its dataclass fields)."""
    return tuple(f.name for f in dataclasses.fields(_class(name)))


def _class(name: str) -> type:
    try:
        return _CLASSES[name]
    except KeyError:
        allowed = ", ".join((OFF, *ALGORITHMS))
        raise ValueError(f"unknown inner-loop algorithm {name!r}: allowed are {allowed}") from None


def build_algorithm(
    name: str, params: Mapping[str, float] | None = None, *, target_s: float | None = None
) -> InnerAlgorithm:
    """Algorithm ``name`` with ``params`` over its defaults. ``target_s``: the target
    latency of ``aimd`` (seconds; a ``target_s`` in ``params`` wins). Raises
    ``ValueError`` for an unknown name, an unknown parameter or a value out of range."""
    cls = _class(name)
    given = dict(params or {})
    allowed = parameter_names(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name} has no parameter {', '.join(unknown)}: allowed are {', '.join(allowed)}"
        )
    if target_s is not None and "target_s" in allowed:
        given.setdefault("target_s", target_s)
    algorithm: InnerAlgorithm = cls(**given)
    return algorithm
