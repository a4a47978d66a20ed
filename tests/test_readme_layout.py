"""README's layout table (the one under "The picture") names only paths that exist:
every entry of its "where" column, every path a row mentions, and a bare file name
(``worker.py``) in one of the row's folders. A moved module fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table() -> list[list[str]]:
    lines = (ROOT / "README.md").read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| piece | where |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def _missing(row: list[str]) -> list[str]:
    _, where, what = row
    folders, missing = [], []
    for token in re.findall(r"`([^`]+)`", where):
        path = ROOT / token
        if not path.exists():
            missing.append(token)
        folders.append(path if path.is_dir() else path.parent)
    for token in re.findall(r"`([^`]+)`", what):
        if "/" in token and " " not in token and not token.startswith("/"):
            if not (ROOT / token).exists():
                missing.append(token)
        elif re.fullmatch(r"\w+\.py", token) and not any((f / token).exists() for f in folders):
            missing.append(f"{token} (in {where})")
    return missing


def test_every_path_in_the_layout_table_exists() -> None:
    rows = _table()
    assert len(rows) > 10, "the layout table was not found under its header"
    assert all(len(row) == 3 for row in rows), [row for row in rows if len(row) != 3]
    missing = [(row[0], m) for row in rows for m in _missing(row)]
    assert missing == []


def test_a_moved_module_would_be_caught() -> None:
    """The check itself: an old flat name (before the worker's subpackage) is missing."""
    old = ["job worker", "`target_app/surgeguard_target_app/worker/`", "`worker_intake.py`"]
    assert _missing(old) == ["worker_intake.py (in `target_app/surgeguard_target_app/worker/`)"]
