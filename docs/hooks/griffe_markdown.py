"""Griffe extension for these docs: keep docstring ranges such as `>= 1` from becoming quotes.

qlearn's docstrings state ranges plainly (`num_episodes: >= 1.`). Rendered as Markdown, a
parameter description that starts with `>` would turn into a block quote. This extension
escapes that one character when the docs are built; the docstrings themselves stay plain text.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# "name: >..." or "name (type): >..." at the start of a line of a Google-style section.
_LEADING_GT = re.compile(r"^(\s*[\w*]+(?: \([^)]*\))?:\s+)>", re.MULTILINE)


class EscapeLeadingGreaterThan(griffe.Extension):
    """Escape a `>` that starts a parameter's description."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _LEADING_GT.sub(r"\1\\>", obj.docstring.value)
