"""Text people typed, shown as itself wherever Streamlit renders Markdown.

Operators type reasons (and the controller records who they are); ``st.markdown``,
``st.info``, ``st.success`` and the cells of ``st.table`` all render Markdown, so an
asterisk, a bracket or a tag in a reason would turn into emphasis, a link or markup.
``literal`` backslash-escapes every ASCII punctuation character (CommonMark shows an
escaped one as itself, and Streamlit's own ``:directive[...]`` and ``$math$`` need
one too) and folds line breaks into spaces, so the text reads exactly as typed.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def literal(text: str) -> str:
    """``text`` as Markdown that renders as exactly ``text`` (whitespace folded)."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(text.split()))
