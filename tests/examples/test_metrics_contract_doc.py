"""docs/metrics-contract.md cannot drift from the code (issue 12): its tables list
exactly the metrics ``surgeguard.metric_names`` defines, the first one exactly what the
controller reads (``CONTROLLER_READS``), each with the type and labels the module's
comment gives it; and its control-document table names every field of
``ControlState``."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

from surgeguard import metric_names
from surgeguard.controlplane import ControlState

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics-contract.md"
READ = "## Metrics the controller reads"
NOT_READ = "## Metrics a replica exports that the controller does not read"
DOCUMENT = "## The control document"

# In metric_names.py each name follows one comment: "# <type> {a, b}: ..." or
# "# <type>, no labels: ...".
_COMMENT = re.compile(r"^# (counter|gauge|histogram)(?: \{([^}]*)\}|, no labels)[:;]")
_CONSTANT = re.compile(r'^[A-Z][A-Z0-9_]* = "([a-z0-9_]+)"$')


def declared() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, labels), from the comment above each name in metric_names.py."""
    lines = Path(metric_names.__file__).read_text().splitlines()
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for above, line in itertools.pairwise(lines):
        constant, comment = _CONSTANT.match(line), _COMMENT.match(above)
        if constant and comment:
            labels = comment.group(2) or ""
            found[constant.group(1)] = (
                comment.group(1),
                frozenset(part.strip() for part in labels.split(",") if part.strip()),
            )
    return found


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n") + len(heading)
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def table(part: str) -> list[list[str]]:
    """The rows of the first table in ``part`` (header and rule left out), as cells."""
    rows = [line for line in part.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def metric_rows(heading: str) -> dict[str, tuple[str, frozenset[str], str]]:
    """name -> (type, labels, unit) of a metrics table."""
    rows: dict[str, tuple[str, frozenset[str], str]] = {}
    for name, kind, labels, unit, what in table(section(DOC.read_text(), heading)):
        assert re.fullmatch(r"`[a-z0-9_]+`", name), name
        assert name.strip("`") not in rows, f"{name} is listed twice"
        assert what, f"{name} says nothing about what it is for"
        parts = frozenset() if labels == "none" else frozenset(p.strip() for p in labels.split(","))
        rows[name.strip("`")] = (kind, parts, unit)
    return rows


def test_the_first_table_is_exactly_what_the_controller_reads() -> None:
    assert set(metric_rows(READ)) == set(metric_names.CONTROLLER_READS)


def test_every_documented_metric_exists_and_every_one_is_documented() -> None:
    read, not_read = metric_rows(READ), metric_rows(NOT_READ)
    assert not set(read) & set(not_read)
    known = {*metric_names.EXPORTED, metric_names.PROCESS_CPU_SECONDS_TOTAL}
    assert set(read) | set(not_read) <= known
    # Everything a protected replica exports is on the page (the demo worker's own
    # families are the demo's, not the contract's).
    worker_only = {
        metric_names.JOBS_RETRY_SCHEDULED,
        metric_names.JOBS_PROCESSED_TOTAL,
        metric_names.JOBS_FAILED_TOTAL,
        metric_names.JOBS_DEAD_TOTAL,
        metric_names.JOBS_DUPLICATE_TOTAL,
        metric_names.JOB_DURATION_SECONDS,
        metric_names.JOBS_RECLAIMED_TOTAL,
        metric_names.WORKER_CONCURRENCY_IN_USE,
        metric_names.WORKER_CONCURRENCY_LIMIT,
    }
    assert known - worker_only == set(read) | set(not_read)


def test_each_metric_has_the_type_and_labels_its_definition_gives() -> None:
    definitions = declared()
    for name, (kind, labels, unit) in {**metric_rows(READ), **metric_rows(NOT_READ)}.items():
        assert name in definitions, f"{name}: no type comment in metric_names.py"
        assert (kind, labels) == definitions[name], name
        if name.endswith("_seconds") or name.endswith("_seconds_total"):
            assert unit == "seconds", name


def test_the_control_document_table_names_every_field() -> None:
    rows = table(section(DOC.read_text(), DOCUMENT))
    documented = [row[0].strip("`") for row in rows]
    assert documented == [f.name for f in dataclasses.fields(ControlState)]
