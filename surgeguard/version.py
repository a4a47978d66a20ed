"""The installed distribution's version, for ``surgeguard --version``.

Read from the package metadata (pyproject.toml's ``version`` once installed), so there
is one place to bump it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "surgeguard"
# A source tree that was never installed has no metadata: a valid PEP 440 version that
# says so, rather than a traceback.
UNKNOWN = "0+unknown"


def installed_version() -> str:
    """The version of the installed ``surgeguard`` distribution, or ``UNKNOWN``."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN
