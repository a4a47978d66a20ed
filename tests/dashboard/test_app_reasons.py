"""Issue 13: text an operator types (a reason) is shown on the dashboard as text, never
as Markdown or HTML. Streamlit renders Markdown in ``st.success``, ``st.info``,
``st.markdown`` and in ``st.table`` cells, so each place a reason is shown is rendered
here with a CommonMark renderer and must read exactly as typed: no emphasis, no link,
no tag. Against a real controller (the flash and the audit table) and a recorded one
(a running drill's line)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP, TOKEN, Stack
from tests.dashboard.recorded import Recording, recorded_controller

TYPED = "**bold** <b>x</b> [link](http://x) `code` $x$ :red[alarm] _it_ ~~s~~"
RENDER = MarkdownIt("commonmark").enable(["strikethrough", "table"])


def _as_text(markdown: str) -> str:
    """What a reader sees: ``markdown`` rendered, with no tag but the paragraph."""
    shown = RENDER.render(markdown).strip()
    assert shown.startswith("<p>") and shown.endswith("</p>"), shown
    inner = shown[3:-4]
    assert "<" not in inner.replace("&lt;", ""), shown  # no <strong>, <a>, <code>, <b>
    return html.unescape(inner)


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_reason_is_shown_as_typed_in_the_confirmation_and_the_audit_table(
    stack: Stack,
) -> None:
    at = _app()
    at.text_input(key="admin_token").input(TOKEN).run()
    at.text_input(key="mode_reason_read_only").input(TYPED)
    at.button(key="mode_submit_read_only").click().run()
    assert not at.exception, [e.value for e in at.exception]

    (said,) = [s.value for s in at.success if "Mode read_only is now ON" in s.value]
    assert _as_text(said).endswith(f"Reason: {TYPED}"), said
    at.run()  # the next run reads the audit trail
    audit = next(t.value for t in at.table if "who" in t.value.columns)
    assert _as_text(audit.iloc[0]["reason"]) == TYPED
    assert _as_text(audit.iloc[0]["who"]) == "admin"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    with recorded_controller() as (url, recording):
        monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", url)
        yield recording


def test_a_running_drills_reason_and_operator_are_shown_as_typed(recorded: Recording) -> None:
    now = recorded.now
    recorded.drills["current"] = {
        "id": "d1",
        "scenario": "spike",
        "users": 50,
        "duration_s": 60.0,
        "source": "controller",
        "who": "<i>eve</i>",
        "reason": TYPED,
        "started_at": now - 5,
        "status": "running",
    }
    at = _app()
    lines = [e.value for e in at.info if e.value.startswith("Load-test drill")]
    lines += [m.value for m in at.markdown if m.value.startswith("**spike** running")]
    assert len(lines) == 2, [m.value for m in (*at.info, *at.markdown)]
    for line in lines:
        # The scenario is the one deliberate emphasis; the rest is text.
        shown = RENDER.render(line)
        assert re.findall(r"<[a-z]+>", shown) == ["<p>", "<strong>"], shown
        assert (
            html.unescape(re.sub(r"</?(p|strong)>", "", shown))
            .strip()
            .endswith(f"by <i>eve</i> ({TYPED})")
        )
