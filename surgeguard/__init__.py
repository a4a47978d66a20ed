"""surgeguard: keep a web service fast when traffic spikes far past what it can serve.

The library parts a service author uses: admission control (``AdmissionMiddleware``
over a ``Limiter``), per-dependency ``Bulkhead``s, the knobs and degradation modes
that the control plane publishes in Redis, and the client that applies them.
"""

from surgeguard.admission import AdmissionMiddleware, RouteTable
from surgeguard.bulkhead import Bulkhead, BulkheadFull, BulkheadRejected, BulkheadTimeout
from surgeguard.knobs import KNOB_SPECS, KnobError, Knobs
from surgeguard.limiter import Limiter, LimiterStats
from surgeguard.modes import Mode
from surgeguard.priority import Priority

__all__ = [
    "KNOB_SPECS",
    "AdmissionMiddleware",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadRejected",
    "BulkheadTimeout",
    "KnobError",
    "Knobs",
    "Limiter",
    "LimiterStats",
    "Mode",
    "Priority",
    "RouteTable",
]
