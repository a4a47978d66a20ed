"""How numbers read in decisions and sentences meant for people."""

from __future__ import annotations

import math


def ms(seconds: float) -> str:
    """``0.4123`` -> ``"412 ms"``; ``"n/a"`` when there is no number."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def share_of_core(cores: float) -> str:
    """``0.35`` -> ``"35% of a core"``; ``"n/a"`` when there is no number."""
    return "n/a" if math.isnan(cores) else f"{cores:.0%} of a core"
