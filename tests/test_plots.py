"""Plots draw the numbers they are given: the learning curve's lines are the CSV rows, the value
grid's cells and arrows are the values and the policy, the init study's lines are its layers,
and a GIF holds every frame. Bad output paths and malformed logs are covered through the CLI in
tests/cli/test_dqn_cli.py."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from qlearn.diagnostics import LayerStats, StudyResult
from qlearn.errors import ConfigError, QlearnError
from qlearn.plots import (
    FROZEN_LAKE_MOVES,
    init_study_figure,
    learning_curve,
    learning_curve_figure,
    plot_init_study,
    plot_value_grid,
    value_grid_figure,
    write_gif,
)

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<?xml", ".pdf": b"%PDF"}
LAKE_4X4 = ["SFFF", "FHFH", "FFFH", "HFFG"]  # FrozenLake-v1's map


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """30 episodes whose returns cycle 0, 10, 20 (every 3-episode mean is 10), 3 evaluations."""
    lines = ["step,episode,return,length"]
    lines += [f"{100 * (i + 1)},{i},{10 * (i % 3)},{100}" for i in range(30)]
    (tmp_path / "episodes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    evals = "step,mean_return,std_return,episodes\n1000,5.5,1.5,10\n2000,12,0,10\n3000,19.25,2,10\n"
    (tmp_path / "evals.csv").write_text(evals, encoding="utf-8")
    return tmp_path


def test_learning_curve_draws_the_csv_rows(run_dir: Path) -> None:
    fig = learning_curve_figure(run_dir)
    (ax,) = fig.axes
    raw, smooth = ax.lines[:2]
    assert raw.get_label() == "episode return"
    np.testing.assert_array_equal(raw.get_xdata(), 100 * np.arange(1, 31))
    np.testing.assert_array_equal(raw.get_ydata(), [0, 10, 20] * 10)
    # 30 episodes: a window of 30 // 10 = 3, so the average starts at the third episode
    assert smooth.get_label() == "moving average (3)"
    np.testing.assert_array_equal(smooth.get_xdata(), 100 * np.arange(3, 31))
    np.testing.assert_allclose(smooth.get_ydata(), np.full(28, 10.0))
    (errorbar,) = ax.containers
    assert errorbar.get_label() == "greedy evaluation"
    means, _, (bars,) = errorbar.lines
    np.testing.assert_array_equal(means.get_xdata(), [1000, 2000, 3000])
    np.testing.assert_array_equal(means.get_ydata(), [5.5, 12, 19.25])
    # each bar runs from mean - std to mean + std
    segments = [seg.tolist() for seg in bars.get_segments()]
    assert segments == [
        [[1000, 4], [1000, 7]],
        [[2000, 12], [2000, 12]],
        [[3000, 17.25], [3000, 21.25]],
    ]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "env steps",
        "return",
        run_dir.name,
    )


def test_moving_average_window_by_hand(tmp_path: Path) -> None:
    """20 episodes: a window of 2, so the average is of each pair of neighbours."""
    returns = [float(i * i) for i in range(20)]
    lines = ["step,return", *(f"{i + 1},{r}" for i, r in enumerate(returns))]
    (tmp_path / "episodes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ax,) = learning_curve_figure(tmp_path).axes
    assert len(ax.lines) == 2 and not ax.containers  # no evals.csv, no error bars
    expected = [(i * i + (i + 1) ** 2) / 2 for i in range(19)]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), expected)


def test_learning_curve_of_evaluations_only(tmp_path: Path) -> None:
    (tmp_path / "evals.csv").write_text("step,mean_return,std_return\n500,3,1\n", encoding="utf-8")
    (ax,) = learning_curve_figure(tmp_path).axes
    assert not [line for line in ax.lines if line.get_label() == "episode return"]
    (errorbar,) = ax.containers
    assert errorbar.lines[0].get_ydata().tolist() == [3.0]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_learning_curve_writes_the_format_of_its_suffix(run_dir: Path, suffix: str) -> None:
    out = run_dir / f"curve{suffix}"
    assert learning_curve(run_dir, out) == out
    data = out.read_bytes()
    assert len(data) > 1_000 and data.startswith(MAGIC[suffix])
    assert plt.get_fignums() == []  # the figure was closed after writing


def test_learning_curve_refuses_a_run_without_logs(tmp_path: Path) -> None:
    with pytest.raises(QlearnError, match=r"has no episodes\.csv or evals\.csv to plot"):
        learning_curve_figure(tmp_path)


def test_value_grid_shows_each_value_in_its_cell_and_policy_arrows() -> None:
    values = np.arange(16) / 15  # state s has value s / 15
    policy = np.array([1, 2, 1, 0, 1, 0, 1, 0, 2, 1, 1, 0, 0, 2, 2, 0])
    fig = value_grid_figure(values, LAKE_4X4, policy=policy, title="lake")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), values.reshape(4, 4))
    texts = [t.get_text() for t in ax.texts if t.get_text()]
    assert texts[::2] == [c for row in LAKE_4X4 for c in row]  # the letters, row by row
    assert texts[1::2] == [f"{v:.2f}" for v in values]
    arrows = [t for t in ax.texts if not t.get_text()]
    # no arrows from the four holes (states 5, 7, 11, 12) and the goal (15)
    states = [s for s in range(16) if LAKE_4X4[s // 4][s % 4] not in "HG"]
    assert len(arrows) == len(states) == 11
    for arrow, state in zip(arrows, states, strict=True):
        (x0, y0), (x1, y1) = arrow.xyann, arrow.xy
        dc, dr = FROZEN_LAKE_MOVES[policy[state]]
        assert (x1 - x0, y1 - y0) == pytest.approx((0.5 * dc, 0.5 * dr))
        # the arrow sits in its state's cell: column s % 4, row s // 4
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((state % 4, state // 4 - 0.08))
    assert ax.get_title() == "lake"


def test_value_grid_without_a_policy_has_no_arrows(tmp_path: Path) -> None:
    desc = np.array([list("SF"), list("HG")], dtype="c")  # bytes, as env.unwrapped.desc
    ax = value_grid_figure(np.array([0.5, 1.0, 0.0, 0.0]), desc).axes[0]
    assert [t.get_text() for t in ax.texts] == ["S", "0.50", "F", "1.00", "H", "0.00", "G", "0.00"]
    out = plot_value_grid(np.zeros(4), desc, tmp_path / "grid.svg")
    assert out.read_bytes().startswith(MAGIC[".svg"])


@pytest.mark.parametrize(
    ("values", "policy", "message"),
    [
        (np.zeros(15), None, r"values of shape \(15,\) do not fit the 4x4 map; allowed: 16 values"),
        (np.zeros(16), np.zeros(9), r"policy of 9 actions does not fit the 4x4 map; allowed: 16"),
        (np.zeros(16), np.full(16, 4), r"policy action 4 has no arrow; allowed: 0, 1, 2, 3"),
    ],
)
def test_value_grid_refuses_values_or_a_policy_that_do_not_fit(
    values: np.ndarray, policy: np.ndarray | None, message: str, tmp_path: Path
) -> None:
    """These used to end in numpy's reshape ValueError or a KeyError."""
    with pytest.raises(ConfigError, match=message):
        plot_value_grid(values, LAKE_4X4, tmp_path / "grid.png", policy=policy)
    assert not (tmp_path / "grid.png").exists()


def _stats(layer: int, var: float, grad: float, back: float) -> LayerStats:
    return LayerStats(layer, 0.0, var, grad, back)


def test_init_study_draws_one_line_per_scheme_with_the_input_first(tmp_path: Path) -> None:
    result = StudyResult(
        depth=2,
        width=3,
        activation="tanh",
        batch=8,
        seed=7,
        input_mean=0.0,
        input_var=1.0,
        layers={
            "xavier": (_stats(1, 0.5, 2.0, 4.0), _stats(2, 0.25, 3.0, 5.0)),
            # zero, negative and infinite values cannot sit on a log axis: left out as NaN
            "zeros": (_stats(1, 0.0, -1.0, math.inf), _stats(2, 1e-3, 0.0, 2.0)),
        },
    )
    fig = init_study_figure(result)
    variance, backward, gradient = fig.axes[:3]
    assert [ax.get_yscale() for ax in fig.axes[:3]] == ["log"] * 3
    assert [line.get_label() for line in variance.lines] == ["xavier", "zeros"]
    xavier, zeros = variance.lines
    np.testing.assert_array_equal(xavier.get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(xavier.get_ydata(), [1.0, 0.5, 0.25])
    np.testing.assert_array_equal(zeros.get_ydata(), [1.0, np.nan, 1e-3])
    np.testing.assert_array_equal(backward.lines[0].get_xdata(), [1, 2])
    np.testing.assert_array_equal(backward.lines[0].get_ydata(), [4.0, 5.0])
    np.testing.assert_array_equal(backward.lines[1].get_ydata(), [np.nan, 2.0])
    np.testing.assert_array_equal(gradient.lines[1].get_ydata(), [np.nan, np.nan])
    assert fig.get_suptitle() == ("init study: depth 2, width 3, tanh activations, batch 8, seed 7")
    out = plot_init_study(result, tmp_path / "study.png")
    assert out.read_bytes().startswith(MAGIC[".png"])


def test_write_gif_holds_every_frame(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    frames = [np.full((6, 8, 3), colour, dtype=np.uint8) for colour in colours]
    out = write_gif(frames, tmp_path / "episode.gif", fps=20)
    with Image.open(out) as gif:
        assert (gif.format, gif.size, gif.n_frames, gif.is_animated) == ("GIF", (8, 6), 5, True)
        assert gif.info["loop"] == 0
        for index, colour in enumerate(colours):
            gif.seek(index)
            assert gif.info["duration"] == 50  # 1000 ms / 20 fps
            assert np.asarray(gif.convert("RGB"))[3, 4].tolist() == list(colour)


@pytest.mark.parametrize("frames", [[], [None]])
def test_write_gif_without_frames_is_refused(frames: list, tmp_path: Path) -> None:
    with pytest.raises(QlearnError, match=r"^no frames to write: the env did not render rgb_arr"):
        write_gif(frames, tmp_path / "episode.gif")
    assert list(tmp_path.iterdir()) == []
