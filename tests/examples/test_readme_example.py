"""The README's "Protect your own app" shows the example's own code (issue 12): each of
its Python blocks appears verbatim in examples/inventory_service.py, and the protected
part is the whole of what the example marks as shown, so neither can change alone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "inventory_service.py"
HEADING = "## Protect your own app\n"
SHOWN_FROM = 'app = FastAPI(title="inventory")\n'
SHOWN_UNTIL = "# -- end of what the README shows"


def python_blocks() -> list[str]:
    text = README.read_text()
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_every_python_block_is_the_examples_own_code() -> None:
    example = EXAMPLE.read_text()
    blocks = python_blocks()
    assert len(blocks) == 2, blocks
    for block in blocks:
        assert block in example, block


def test_the_protected_part_is_all_the_example_marks_as_shown() -> None:
    example = EXAMPLE.read_text()
    shown = example[example.index(SHOWN_FROM) : example.index(SHOWN_UNTIL)].rstrip() + "\n"
    assert "surgeguard.protect(" in shown and "guard.modes" in shown
    assert python_blocks()[1] == shown
