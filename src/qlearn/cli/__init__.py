"""The `qlearn` command: the only place that prints for the user and turns errors into exit codes.

Each command lives in a module of this package and registers itself on the shared `app`.
"""

from __future__ import annotations

import sys

from qlearn.cli.app import app
from qlearn.errors import QlearnError

# Importing the command modules registers their commands on `app`, listed in `--help` in this
# order: training, using and tuning a DQN first, deployment and settings after it, then the study
# and tabular tools.
from qlearn.cli import dqn as _dqn  # noqa: F401  isort: skip
from qlearn.cli import tune as _tune  # noqa: F401  isort: skip
from qlearn.cli import seeds as _seeds  # noqa: F401  isort: skip
from qlearn.cli import deploy as _deploy  # noqa: F401  isort: skip
from qlearn.cli import settings as _settings  # noqa: F401  isort: skip
from qlearn.cli import study as _study  # noqa: F401  isort: skip
from qlearn.cli import tabular as _tabular  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; a QlearnError becomes one line on stderr and exit 2."""
    try:
        app(args=argv, prog_name="qlearn", standalone_mode=True)
    except QlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


__all__ = ["app", "main"]
