"""The Typer application object shared by the command modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="qlearn",
    help="Q-learning in all its forms: Q-tables, planning on MDPs, and the DQN family.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
