"""The apps beside the library each need an extra; importing one without it says
which (``pip install 'surgeguard[dashboard]'``) instead of failing deep inside."""

from __future__ import annotations

import importlib.util


def require(package: str, extra: str, *modules: str) -> None:
    """Raise ``ImportError`` naming the extra when any of ``modules`` is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"{package} needs the {extra!r} extra: pip install 'surgeguard[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )
