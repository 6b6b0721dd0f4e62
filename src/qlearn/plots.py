"""Pictures: learning curves, value heatmaps with policy arrows, per-layer statistics, GIFs.

Uses matplotlib's non-interactive Agg backend. Every function checks its output path first
(`check_output_path`), writes the file atomically (a crash leaves the old file or none, never a
torn one) in the format its suffix names (PLOT_FORMATS), and returns the path it wrote. The
`*_figure` functions build the same figures without writing them, for notebooks and tests.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from qlearn.checkpoint import atomic_output
from qlearn.errors import ConfigError, QlearnError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from qlearn.diagnostics import StudyResult

PLOT_FORMATS = (".png", ".svg", ".pdf")
"""Suffixes the plots accept, each written in its own format: PNG for screens, SVG and PDF
(vector) for print. Matplotlib knows more; these three cover the uses and keep a typo such as
`curve.pgn` from being refused only after the work."""
GIF_FORMATS = (".gif",)
EPISODES_COLUMNS = ("step", "return")
EVALS_COLUMNS = ("step", "mean_return", "std_return")


def check_output_path(
    path: str | Path, suffixes: Sequence[str] = PLOT_FORMATS, what: str = "output file"
) -> Path:
    """Raise ConfigError unless a file can be written at `path`, before any work is done.

    The path must end in one of `suffixes` (any case) and not be a directory; the nearest folder
    above it that exists must be a writable directory (missing folders below it are created
    when the file is written).

    Args:
        path: the file to write.
        suffixes: allowed suffixes, with the dot.
        what: how messages name the path, e.g. the CLI option `--out`.
    """
    path = Path(path)
    allowed = " or ".join(", ".join(suffixes).rsplit(", ", 1))
    if path.is_dir():
        raise ConfigError(
            f"{what} {str(path)!r} is a directory; allowed: a file path ending in {allowed}, "
            f"e.g. {str(path / ('name' + suffixes[0]))!r}"
        )
    if path.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{what} {str(path)!r} is not a {allowed} file; allowed: a path ending in {allowed}"
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{what} {str(path)!r} cannot be written: {str(folder)!r} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} {str(path)!r} cannot be written: folder {str(folder)!r} is not writable"
        )
    return path


def _save(fig: Figure, path: Path, **kwargs: object) -> Path:
    """Write `fig` atomically in the format of `path`'s suffix, then close it."""
    try:
        with atomic_output(path) as f:
            fig.savefig(f, format=path.suffix[1:].lower(), **kwargs)  # type: ignore[arg-type]
    finally:
        plt.close(fig)
    return path


def plot_init_study(result: StudyResult, path: str | Path) -> Path:
    """Draw an init study's per-layer statistics, one line per scheme, on log-scale axes.

    Three panels: activation variance (layer 0 is the input), the backward signal norm, and the
    weight-gradient norm (see `qlearn.diagnostics.LayerStats`). Values that are zero, negative
    or not finite cannot sit on a log axis and are left out of the lines.
    """
    path = check_output_path(path)
    return _save(init_study_figure(result), path, dpi=100)


def init_study_figure(result: StudyResult) -> Figure:
    """The figure `plot_init_study` writes, left open for the caller to inspect or save."""
    panels = (
        ("activation variance", "activation_var", True),
        ("backward signal norm", "backward_norm", False),
        ("weight gradient norm", "grad_norm", False),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), layout="constrained")
    for ax, (label, field, with_input) in zip(axes, panels, strict=True):
        for scheme, layers in result.layers.items():
            xs = [stats.layer for stats in layers]
            ys = [getattr(stats, field) for stats in layers]
            if with_input:
                xs, ys = [0, *xs], [result.input_var, *ys]
            ys = [y if math.isfinite(y) and y > 0 else math.nan for y in ys]
            ax.plot(xs, ys, marker="o", markersize=3, label=scheme)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(label)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        f"init study: depth {result.depth}, width {result.width}, {result.activation} "
        f"activations, batch {result.batch}, seed {result.seed}"
    )
    return fig


def read_log(path: Path, columns: Sequence[str]) -> np.ndarray | None:
    """The numeric `columns` of a training log CSV as (rows, len(columns)), or None if absent.

    Raises:
        QlearnError: naming the file and the problem: not readable as UTF-8 CSV, empty (no
            header), a column missing, or a cell that is not a number.
    """
    if not path.exists():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QlearnError(f"log {str(path)!r} cannot be read as CSV: {exc}") from None
    wanted = ", ".join(columns)
    if not header:
        raise QlearnError(f"log {str(path)!r} is empty; expected a header row with {wanted}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise QlearnError(
            f"log {str(path)!r} has no {missing[0]!r} column (its header: "
            f"{', '.join(header)}); expected {wanted}"
        )
    index = [header.index(c) for c in columns]
    values = np.empty((len(rows), len(columns)))
    for i, (line, row) in enumerate(rows):
        for j, k in enumerate(index):
            cell = row[k] if k < len(row) else ""
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise QlearnError(
                    f"log {str(path)!r} line {line}: {columns[j]} = {cell!r} is not a number"
                ) from None
    return values


def learning_curve(run_dir: str | Path, out: str | Path) -> Path:
    """Episode returns (raw and a moving average) and greedy evaluations against env steps.

    Reads `episodes.csv` (step, return) and `evals.csv` (step, mean_return, std_return) in
    `run_dir` and writes the figure to `out` (.png, .svg or .pdf).
    """
    out = check_output_path(out)
    return _save(learning_curve_figure(run_dir), out)


def learning_curve_figure(run_dir: str | Path) -> Figure:
    """The figure `learning_curve` writes, left open for the caller to inspect or save.

    Raises:
        QlearnError: `run_dir` has neither log, or no rows in either, or a log is malformed.
    """
    run_dir = Path(run_dir)
    episodes = read_log(run_dir / "episodes.csv", EPISODES_COLUMNS)
    evals = read_log(run_dir / "evals.csv", EVALS_COLUMNS)
    if episodes is None and evals is None:
        raise QlearnError(f"{str(run_dir)!r} has no episodes.csv or evals.csv to plot")
    if not (episodes is not None and len(episodes)) and not (evals is not None and len(evals)):
        raise QlearnError(f"{str(run_dir)!r} has no rows to plot in episodes.csv or evals.csv")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if episodes is not None and len(episodes):
        steps, returns = episodes[:, 0], episodes[:, 1]
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, lw=0.8, label="episode return")
        window = max(1, min(50, len(returns) // 10))
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(
            steps[window - 1 :],
            smooth,
            color="tab:blue",
            lw=1.8,
            label=f"moving average ({window})",
        )
    if evals is not None and len(evals):
        ax.errorbar(
            evals[:, 0],
            evals[:, 1],
            yerr=evals[:, 2],
            color="tab:red",
            marker="o",
            ms=4,
            capsize=3,
            label="greedy evaluation",
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def write_gif(frames: Sequence[np.ndarray], out: str | Path, fps: int = 30) -> Path:
    """Write rgb_array frames (height, width, 3) uint8 as an animated GIF, atomically."""
    from PIL import Image

    out = check_output_path(out, GIF_FORMATS)
    if not frames or frames[0] is None:
        raise QlearnError("no frames to write: the env did not render rgb_array frames")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    with atomic_output(out) as f:
        images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 / fps),
            loop=0,
        )
    return out


# FrozenLake's actions as (column, row) steps: 0 left, 1 down, 2 right, 3 up.
FROZEN_LAKE_MOVES: dict[int, tuple[int, int]] = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}


def plot_value_grid(
    values: np.ndarray,
    desc: np.ndarray | Sequence[str],
    path: str | Path,
    *,
    policy: np.ndarray | None = None,
    title: str = "",
    moves: dict[int, tuple[int, int]] = FROZEN_LAKE_MOVES,
) -> Path:
    """Draw a grid world's state values as a heatmap, with the policy's action as an arrow.

    Args:
        values: (rows * cols,) V of each state, numbered row by row as in FrozenLake.
        desc: (rows, cols) the map's letters (`env.unwrapped.desc`: S start, F frozen, H hole,
            G goal); holes and goals are labelled and get no arrow.
        path: where to write the figure (.png, .svg or .pdf).
        policy: (rows * cols,) int action of each state, or None for no arrows.
        title: drawn above the grid.
        moves: each action's (column, row) step; FrozenLake's by default.
    """
    path = check_output_path(path)
    figure = value_grid_figure(values, desc, policy=policy, title=title, moves=moves)
    return _save(figure, path, dpi=100)


def value_grid_figure(
    values: np.ndarray,
    desc: np.ndarray | Sequence[str],
    *,
    policy: np.ndarray | None = None,
    title: str = "",
    moves: dict[int, tuple[int, int]] = FROZEN_LAKE_MOVES,
) -> Figure:
    """The figure `plot_value_grid` writes (same arguments but the path), left open."""
    letters = np.array([[_letter(c) for c in row] for row in np.asarray(desc)])
    rows, cols = letters.shape
    values = np.asarray(values, dtype=float)
    if values.size != rows * cols:
        raise ConfigError(
            f"values of shape {values.shape} do not fit the {rows}x{cols} map; allowed: "
            f"{rows * cols} values, one per state"
        )
    grid = values.reshape(rows, cols)
    if policy is not None:
        policy = np.asarray(policy).reshape(-1)
        if policy.size != rows * cols:
            raise ConfigError(
                f"policy of {policy.size} actions does not fit the {rows}x{cols} map; allowed: "
                f"{rows * cols} actions, one per state"
            )
        unknown = sorted({int(a) for a in policy} - set(moves))
        if unknown:
            raise ConfigError(
                f"policy action {unknown[0]} has no arrow; allowed: {', '.join(map(str, moves))}"
            )
    fig, ax = plt.subplots(figsize=(1.1 * cols + 1.6, 1.1 * rows + 0.8))
    image = ax.imshow(grid, cmap="viridis")
    fig.colorbar(image, ax=ax, label="V(s)", fraction=0.046, pad=0.04)
    middle = (np.nanmax(grid) + np.nanmin(grid)) / 2
    for r in range(rows):
        for c in range(cols):
            colour = "black" if grid[r, c] > middle else "white"
            letter = letters[r, c]
            ax.text(c - 0.42, r - 0.42, letter, ha="left", va="top", fontsize=8, color=colour)
            ax.text(
                c, r + 0.32, f"{grid[r, c]:.2f}", ha="center", va="center", fontsize=7, color=colour
            )
            if policy is None or letter in ("H", "G"):
                continue
            dc, dr = moves[int(policy[r * cols + c])]
            ax.annotate(
                "",
                xy=(c + 0.25 * dc, r - 0.08 + 0.25 * dr),
                xytext=(c - 0.25 * dc, r - 0.08 - 0.25 * dr),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.6},
            )
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _letter(cell: bytes | str) -> str:
    return cell.decode() if isinstance(cell, bytes) else str(cell)
