"""surgeguard: keep a web service fast when traffic spikes far past what it can serve.

What a service author uses: ``protect`` (one call: the door, the bulkheads, the
metrics and the control-plane watcher around an ASGI app), the ``Dependency`` and
``ModeSpec`` an app declares, the ``Route``s of its door, and the parts underneath
(``AdmissionMiddleware`` over a ``Limiter``, per-dependency ``Bulkhead``s, ``Knobs``).
"""

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.bulkhead import Bulkhead, BulkheadFull, BulkheadRejected, BulkheadTimeout
from surgeguard.declaration import Declaration, Dependency
from surgeguard.knobs import DOOR_KNOB_SPECS, KnobError, Knobs, KnobSpec
from surgeguard.limiter import Limiter, LimiterStats
from surgeguard.modes import ModeSpec
from surgeguard.priority import Priority
from surgeguard.protect import Protection, protect

__all__ = [
    "DOOR_KNOB_SPECS",
    "AdmissionMiddleware",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadRejected",
    "BulkheadTimeout",
    "Declaration",
    "Dependency",
    "KnobError",
    "KnobSpec",
    "Knobs",
    "Limiter",
    "LimiterStats",
    "ModeSpec",
    "Priority",
    "Protection",
    "Route",
    "RouteTable",
    "protect",
]
