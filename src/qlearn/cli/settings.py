"""`qlearn settings`: every key `--set` and `--config` take, with its default and what it allows."""

from __future__ import annotations

import textwrap
from typing import Annotated

import typer

from qlearn.cli.app import app
from qlearn.config import ConfigBase, DQNConfig, Setting, TabularConfig, describe_settings
from qlearn.errors import ConfigError

CONFIGS: dict[str, type[ConfigBase]] = {"dqn": DQNConfig, "tabular": TabularConfig}
"""Which config each command family reads: `train` takes DQNConfig, `tabular` TabularConfig."""
WIDTH = 92


def settings_text(rows: list[Setting], group: str) -> str:
    """One group's settings: `key = default  (type; allowed)` and the wrapped docstring."""
    lines = []
    for row in rows:
        if row.group != group:
            continue
        kind = f"{row.type}; {row.allowed}" if row.allowed else row.type
        lines.append(f"  {row.name} = {row.default}  ({kind})")
        doc = " ".join(row.doc.split())
        lines += textwrap.wrap(doc, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


@app.command()
def settings(
    config: Annotated[
        str, typer.Argument(metavar="CONFIG", help="dqn (for train) or tabular.")
    ] = "dqn",
) -> None:
    """List the settings `--set KEY=VALUE` and `--config` take: default, type, range, meaning.

    Algorithm settings decide what is learned; run settings (seed, threads, device, engine,
    evaluation, logging, checkpoints) decide how the run is carried out.
    """
    if config not in CONFIGS:
        raise ConfigError(f"settings {config!r} is invalid; allowed: {', '.join(CONFIGS)}")
    cls = CONFIGS[config]
    rows = describe_settings(cls)
    for group in ("algorithm", "run"):
        text = settings_text(rows, group)
        if text:
            typer.echo(f"{cls.__name__}: {group} settings\n{text}\n")
