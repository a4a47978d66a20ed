"""Records as JSON: what the controller stores and serves (decisions, history points,
the state) turned into plain values, and history points kept small."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from surgeguard_controller.sensing.signals import Signals


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts with NaN/inf as None, for JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# Per dependency, what history keeps (the rest is in the live state only).
_HISTORY_DEPENDENCY_FIELDS = ("p99_s", "utilisation", "limit", "error_rate", "timeout_rate")


def _round(value: Any) -> Any:
    """Floats to 4 significant digits, recursively: history is read far more often
    than it is written, and 17-digit floats were most of its bytes."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def compact(signals: Signals | None) -> dict[str, Any] | None:
    """Signals as one history point: every field, dependencies trimmed to what the
    charts use, numbers rounded, NaN as null."""
    if signals is None:
        return None
    point: dict[str, Any] = jsonable(signals)
    point["dependencies"] = {
        name: {f: dep[f] for f in _HISTORY_DEPENDENCY_FIELDS}
        for name, dep in point["dependencies"].items()
    }
    rounded: dict[str, Any] = _round(point)
    return rounded
