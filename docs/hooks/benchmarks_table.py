"""MkDocs hook: list the scripts in `benchmarks/` and their result files on the benchmarks page.

The page (`benchmarks.md`) holds the marker `<!-- qlearn-benchmarks -->`. Each script's entry is
the first paragraph of its module docstring, read with `ast` (nothing is imported or run), and
the commands its docstring shows; the results are the files under `benchmarks/results/`. So the
page follows the scripts as they are added, renamed or removed.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

MARKER = "<!-- qlearn-benchmarks -->"
PAGE = "benchmarks.md"


def _script_entry(path: Path, root: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    summary = " ".join(paragraphs[0].split()) if paragraphs else "(no docstring)"
    commands = [
        line.strip()
        for line in doc.splitlines()
        if line.strip().startswith(("python ", ".venv/bin/python "))
    ]
    lines = [f"### `{path.relative_to(root).as_posix()}`", "", summary]
    if commands:
        lines += ["", "```bash", *commands, "```"]
    return "\n".join(lines)


def render(root: Path) -> str:
    """Markdown: one section per benchmark script, then the list of result files."""
    bench = root / "benchmarks"
    scripts = sorted(p for p in bench.glob("*.py") if not p.name.startswith("_"))
    parts = [_script_entry(p, root) for p in scripts] or ["No benchmark scripts yet."]
    results = sorted(p for p in (bench / "results").glob("*") if p.is_file())
    parts.append("### Result files")
    if results:
        parts.append("\n".join(f"- `{p.relative_to(root).as_posix()}`" for p in results))
    else:
        parts.append("None yet.")
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"{PAGE} lost its marker {MARKER}; the benchmark list has nowhere to go")
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(MARKER, render(root))
