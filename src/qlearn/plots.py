"""Pictures: learning curves, value heatmaps with policy arrows, per-layer statistics.

Uses matplotlib's non-interactive Agg backend; every function writes a PNG and returns its path.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from qlearn.diagnostics import StudyResult


def plot_init_study(result: StudyResult, path: str | Path) -> Path:
    """Draw an init study's per-layer statistics, one line per scheme, on log-scale axes.

    Three panels: activation variance (layer 0 is the input), the backward signal norm, and the
    weight-gradient norm (see `qlearn.diagnostics.LayerStats`). Values that are zero, negative
    or not finite cannot sit on a log axis and are left out of the lines.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def learning_curve(run_dir: str | Path, out: str | Path) -> Path:
    """Episode returns (raw and a moving average) and greedy evaluations against env steps."""
    import csv

    from qlearn.errors import QlearnError

    run_dir, out = Path(run_dir), Path(out)

    def read(name: str) -> list[dict[str, str]]:
        path = run_dir / name
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    episodes, evals = read("episodes.csv"), read("evals.csv")
    if not episodes and not evals:
        raise QlearnError(f"{str(run_dir)!r} has no episodes.csv or evals.csv to plot")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if episodes:
        steps = np.array([float(r["step"]) for r in episodes])
        returns = np.array([float(r["return"]) for r in episodes])
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
    if evals:
        steps = np.array([float(r["step"]) for r in evals])
        mean = np.array([float(r["mean_return"]) for r in evals])
        std = np.array([float(r["std_return"]) for r in evals])
        ax.errorbar(
            steps,
            mean,
            yerr=std,
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_gif(frames: Sequence[np.ndarray], out: str | Path, fps: int = 30) -> Path:
    """Write rgb_array frames (height, width, 3) uint8 as an animated GIF."""
    from PIL import Image

    from qlearn.errors import QlearnError

    if not frames or frames[0] is None:
        raise QlearnError("no frames to write: the env did not render rgb_array frames")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
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
        path: where to write the PNG.
        policy: (rows * cols,) int action of each state, or None for no arrows.
        title: drawn above the grid.
        moves: each action's (column, row) step; FrozenLake's by default.
    """
    letters = np.array([[_letter(c) for c in row] for row in np.asarray(desc)])
    rows, cols = letters.shape
    grid = np.asarray(values, dtype=float).reshape(rows, cols)
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
            dc, dr = moves[int(np.asarray(policy).reshape(-1)[r * cols + c])]
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
    path = Path(path)
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def _letter(cell: bytes | str) -> str:
    return cell.decode() if isinstance(cell, bytes) else str(cell)
