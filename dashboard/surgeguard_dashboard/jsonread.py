"""Reading the controller API's JSON leniently: a missing or mistyped number is NaN
("no data"), never zero; a missing object is empty. Shared by every typed record."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NAN = math.nan


def num(value: Any) -> float:
    """A JSON number as a float; null, missing or not a number -> NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NAN
    return float(value)


def integer(value: Any) -> int | None:
    """A JSON number as an int; null, missing, a bool or not a number -> None."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def floats(raw: Any) -> dict[str, float]:
    return {str(k): num(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def ints(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int | float)}


def mapping(raw: Any) -> Mapping[str, Any]:
    return raw if isinstance(raw, Mapping) else {}
