"""What a skip may say in CI (see tests/conftest.py)."""

from __future__ import annotations

# The start of a skip reason for what this kind of machine cannot do at all.
NOT_POSSIBLE_HERE = "not possible on this kind of machine:"
