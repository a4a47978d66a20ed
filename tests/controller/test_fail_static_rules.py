"""The rules that keep versions from going backwards (issue 13), as pure functions:
which document a replica applies, and what a writer starts from."""

from __future__ import annotations

from typing import Any, cast

import pytest

from surgeguard.controlplane import ControlPlaneWriter, ControlState

APPLIED = ControlState(version=7, epoch="a", pins=frozenset({"queue_limit"}), autopilot=False)


@pytest.mark.parametrize(
    ("document", "applies"),
    [
        (ControlState(), False),  # gone
        (ControlState(version=6, epoch="a"), False),  # backwards
        (ControlState(version=7, epoch="a"), False),  # the same one again
        (ControlState(version=8, epoch="a"), True),
        (ControlState(version=1, epoch="b"), False),  # a plane from nothing, elsewhere
        (ControlState(version=8, epoch="b"), True),  # above, whatever the epoch
        (ControlState(version=7, epoch="b", restored_from=("a", 7)), True),  # restored
        (ControlState(version=7, epoch="b", restored_from=("a", 6)), False),
    ],
)
def test_a_replica_applies_only_a_newer_document(document: ControlState, applies: bool) -> None:
    assert document.newer_than("a", 7) is applies


def test_a_replica_that_applied_nothing_applies_anything() -> None:
    assert ControlState().newer_than("", -1)


def writer(known: ControlState) -> ControlPlaneWriter:
    return ControlPlaneWriter(cast(Any, None), recall=lambda: known)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (None, "gone"),
        (b"{not json", "invalid"),
        (b'{"version": 3, "epoch": "a"}', "older than v7"),
    ],
)
def test_a_writer_rebuilds_a_lost_document_from_what_it_knew(raw: bytes | None, why: str) -> None:
    base, reason = writer(APPLIED).base(raw)
    assert why in reason
    assert base.version == 7 and base.restored_from == ("a", 7) and base.epoch not in ("", "a")
    assert base.pins == {"queue_limit"} and base.autopilot is False


def test_a_writer_that_knew_nothing_starts_a_new_plane() -> None:
    base, reason = writer(ControlState()).base(None)
    assert reason == "" and base.version == 0 and base.epoch and base.restored_from is None


def test_a_newer_stored_document_is_the_base() -> None:
    stored = ControlState(version=9, epoch="a").to_json()
    base, reason = writer(APPLIED).base(stored)
    assert reason == "" and base.version == 9 and base.epoch == "a"
