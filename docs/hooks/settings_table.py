"""MkDocs hook: fill the settings page with the table of every DQNConfig and TabularConfig field.

The page (`settings.md`) holds the marker `<!-- qlearn-settings -->`; this hook replaces it with
`qlearn.config.describe_settings` of each config: the same type metadata (`Range`, `Limit`,
`RUN`) the configs check values against, so the table cannot drift from the checks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- qlearn-settings -->"
PAGE = "settings.md"
SRC = Path(__file__).resolve().parents[2] / "src"


def _cell(text: str) -> str:
    """One table cell: docstring lines joined, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """Markdown: per config, a table of algorithm settings, then one of run settings."""
    # This tree's qlearn, even where another copy is installed.
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from qlearn.config import DQNConfig, TabularConfig, describe_settings

    parts = []
    for cls, command in ((DQNConfig, "dqn"), (TabularConfig, "tabular")):
        rows = describe_settings(cls)
        parts += [f"## `{cls.__name__}`", "", f"`qlearn settings {command}` prints this list."]
        for group in ("algorithm", "run"):
            group_rows = [r for r in rows if r.group == group]
            if not group_rows:
                continue
            parts += [
                "",
                f"### {group.capitalize()} settings",
                "",
                "| Key | Type | Default | Allowed | What it does |",
                "| --- | --- | --- | --- | --- |",
            ]
            parts += [
                f"| `{r.name}` | {_cell(r.type)} | `{r.default}` | {_cell(r.allowed)} "
                f"| {_cell(r.doc)} |"
                for r in group_rows
            ]
        parts.append("")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"{PAGE} lost its marker {MARKER}; the settings table has nowhere to go")
    return markdown.replace(MARKER, render())
