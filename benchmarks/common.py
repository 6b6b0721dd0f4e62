"""Scaffolding the benchmark scripts share (not a benchmark): their common arguments (`--results`,
`--quick`, `--seeds`), result JSON written atomically with what machine and code produced it, and
Markdown tables.

The scripts run as `python benchmarks/NAME.py`, which puts this folder first on `sys.path`, so
they import it as `common`. Policies are evaluated with the library's own
`qlearn.evaluation.run_episodes`, not a loop of each script's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qlearn.checkpoint import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MACHINE_INFO_KEY = "machine_info"
"""The key `write_json` adds to every result: see `machine_info`."""


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of a script's docstring."""
    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(description=" ".join(first.split()))


def add_results(
    parser: argparse.ArgumentParser, what: str = "the JSON", default: Path = RESULTS
) -> None:
    """`--results FOLDER`: where the script writes its JSON (and figures)."""
    parser.add_argument(
        "--results", type=Path, default=default, help=f"folder for {what} (default: %(default)s)"
    )


def add_quick(parser: argparse.ArgumentParser, what: str = "a smoke run, for CI") -> None:
    """`--quick`: tiny budgets, so a smoke test runs the whole script in a minute or so."""
    parser.add_argument("--quick", action="store_true", help=what)


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]; argparse's error for anything but comma-separated integers >= 0."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(
            f"seeds {text!r} are invalid; allowed: comma-separated integers >= 0, e.g. 0,1,2"
        )
    return seeds


def add_seeds(parser: argparse.ArgumentParser, default: str = "0,1,2,3,4") -> None:
    """`--seeds 0,1,2`, parsed into a list of ints (the default too)."""
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=default,
        help="comma-separated, e.g. 0,1,2 (default: %(default)s)",
    )


def git_commit(folder: Path = HERE) -> str | None:
    """The checkout's commit, with `+dirty` when files differ from it; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if status.strip() else "")


def machine_info() -> dict[str, Any]:
    """What produced a result: Python, the machine, how busy it was, qlearn's version and commit.

    The load average matters: other work on the machine slows every timed figure.
    """
    import qlearn

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "qlearn": qlearn.__version__,
        "git_commit": git_commit(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a runtime dependency
        pass
    return info


def write_json(path: Path, record: dict[str, Any]) -> Path:
    """Write `record` and `machine_info()` (under MACHINE_INFO_KEY) as JSON, atomically."""
    record = {**record, MACHINE_INFO_KEY: machine_info()}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: one header line, the separator, one line per row (cells as given)."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    separator = "|" + "---|" * len(header)
    return "\n".join([line(header), separator, *(line(row) for row in rows)])
