"""MkDocs hook: fill the CLI reference page with each command's `--help`, captured at build time.

The page (`cli.md`) holds the marker `<!-- qlearn-cli-help -->`; this hook replaces it with the
help of `qlearn` and of every command registered on its Typer app, so the page always matches the
installed CLI. The help is produced in a subprocess with Typer's rich output switched off
(`TYPER_USE_RICH=0`, read when Typer is imported) and a fixed width, so it is plain text that
looks the same on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- qlearn-cli-help -->"
PAGE = "cli.md"
WIDTH = 100
SRC = Path(__file__).resolve().parents[2] / "src"

# Runs in the subprocess: prints {"": main help, "train": train help, ...} as JSON.
_COLLECT = """
import json
import click
import typer
from typer.testing import CliRunner
from qlearn.cli import app

group = typer.main.get_command(app)
names = group.list_commands(click.Context(group))
runner = CliRunner()
helps = {}
for name in ["", *names]:
    args = [name, "--help"] if name else ["--help"]
    result = runner.invoke(app, args, prog_name="qlearn")
    if result.exit_code != 0:
        raise SystemExit(f"qlearn {' '.join(args)} exited with {result.exit_code}: {result.output}")
    helps[name] = result.output
print(json.dumps(helps))
"""


def collect_help() -> dict[str, str]:
    """Each command's help text, keyed by command name ("" for `qlearn` itself)."""
    # src/ first on the path, so the page documents this tree's CLI even where qlearn is not
    # installed (or an older copy is).
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "TYPER_USE_RICH": "0",
        "COLUMNS": str(WIDTH),
        "NO_COLOR": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"collecting the CLI help failed:\n{proc.stderr or proc.stdout}")
    return json.loads(proc.stdout)


def render(helps: dict[str, str]) -> str:
    """Markdown: the top-level help, then one section per command."""
    parts = ["## `qlearn`", "", "```text", helps[""].strip("\n"), "```"]
    for name, text in helps.items():
        if name:
            parts += ["", f"## `qlearn {name}`", "", "```text", text.strip("\n"), "```"]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"{PAGE} lost its marker {MARKER}; the CLI reference has nowhere to go")
    return markdown.replace(MARKER, render(collect_help()))
