"""The Typer application object shared by the command modules, and what they print alike."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from qlearn.evaluation import EvalResult
    from qlearn.monitor import ProgressOutput

app = typer.Typer(
    name="qlearn",
    help="Q-learning in all its forms: Q-tables, planning on MDPs, and the DQN family.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def set_option(config_class: str, settings_group: str) -> Any:
    """The repeatable `--set KEY=VALUE` option of a command whose config is `config_class`."""
    return typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help=f"{config_class} field; repeatable. `qlearn settings {settings_group}` lists every "
        "key with its default and range.",
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def progress_to_stderr(enabled: bool) -> ProgressOutput | None:
    """Progress on stderr when `enabled`: a bar on a terminal, status lines in a log or pipe."""
    from qlearn.monitor import ProgressOutput

    return ProgressOutput.to(sys.stderr) if enabled else None


def success_text(result: EvalResult) -> str:
    """`, success rate 0.750 (success: ...)` for an env with a goal; empty for any other."""
    if result.success_rate is None:
        return ""
    return f", success rate {result.success_rate:.3f} (success: {result.goal})"
