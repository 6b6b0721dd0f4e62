"""Reports on multi-seed runs: their learning curves and scores, summarised with `qlearn.stats`.

A multi-seed run dir (`qlearn.train.multi_seed`) holds one run dir per seed; each seed's
`evals.csv` has the periodic greedy evaluations, at the same steps for every seed. From them:

- the learning curve of each seed (mean evaluation return against env steps), summarised at
  every evaluation by its IQM with a 95% stratified bootstrap band (`stats.curve_band`);
- final scores: the last periodic evaluation of each seed (what `plot` and `compare` use), or the
  held-out evaluation of each seed's best model (what `qlearn eval` on the parent runs);
- a `Summary` of final scores: IQM and mean with 95% bootstrap intervals, and the fraction of
  seeds that reached the env's reward threshold (CartPole-v1: 475);
- comparisons of several runs: the same summary side by side, and the probability that a seed
  of each run beats a seed of the first (`stats.probability_of_improvement`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlearn import stats
from qlearn.checkpoint import atomic_output
from qlearn.errors import QlearnError
from qlearn.plots import EVALS_COLUMNS, check_output_path, read_log
from qlearn.run_dirs import (
    is_multi_seed_run,
    read_multi_seed_info,
    seed_dir_name,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclasses.dataclass(frozen=True)
class SeedRuns:
    """The evaluation curves of one multi-seed run, read from its seeds' logs."""

    path: Path
    env_id: str
    seeds: tuple[int, ...]
    reward_threshold: float | None
    steps: np.ndarray
    """(points,) env steps of the periodic evaluations every seed has."""
    curves: np.ndarray
    """(runs, points) mean evaluation return of each seed at each of `steps`."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def final_scores(self) -> np.ndarray:
        """(runs,) each seed's last periodic evaluation."""
        return self.curves[:, -1]


def load_seed_runs(path: str | Path) -> SeedRuns:
    """Read a multi-seed run dir's curves; QlearnError when it is not one or has no evaluations.

    Only the evaluation steps every seed reached are kept (a run stopped mid-evaluation may
    have one seed a row ahead).
    """
    path = Path(path)
    if not is_multi_seed_run(path):
        raise QlearnError(
            f"{str(path)!r} is not a multi-seed run dir (no multi_seed.json); train one with "
            "`qlearn train ENV --seeds N`"
        )
    info = read_multi_seed_info(path)
    logs = []
    for seed in info["seeds"]:
        rows = read_log(path / seed_dir_name(seed) / "evals.csv", EVALS_COLUMNS)
        if rows is None or not len(rows):
            raise QlearnError(
                f"seed {seed} of {str(path)!r} has no periodic evaluations (evals.csv); train "
                "with eval_interval > 0"
            )
        logs.append(rows)
    points = min(len(rows) for rows in logs)
    steps = logs[0][:points, 0]
    curves = np.stack([rows[:points, 1] for rows in logs])
    threshold = info.get("reward_threshold")
    return SeedRuns(
        path=path,
        env_id=str(info.get("env_id")),
        seeds=tuple(info["seeds"]),
        reward_threshold=float(threshold) if threshold is not None else None,
        steps=steps,
        curves=curves,
    )


@dataclasses.dataclass(frozen=True)
class Summary:
    """Final scores of several seeds, with 95% stratified bootstrap intervals."""

    num_runs: int
    iqm: stats.Interval
    mean: stats.Interval
    fraction_solved: float | None
    """Share of seeds scoring at least the reward threshold; None for an env without one."""
    reward_threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_runs": self.num_runs,
            "iqm": self.iqm.to_dict(),
            "mean": self.mean.to_dict(),
            "fraction_solved": self.fraction_solved,
            "reward_threshold": self.reward_threshold,
        }


def summarize(
    scores: np.ndarray | Sequence[float], reward_threshold: float | None = None, seed: int = 0
) -> Summary:
    """IQM and mean of `scores` ((runs,)) with 95% bootstrap intervals, and the solved share."""
    scores = np.asarray(scores, dtype=np.float64)
    solved = None
    if reward_threshold is not None:
        solved = float(np.mean(scores >= reward_threshold))
    return Summary(
        num_runs=len(scores),
        iqm=stats.bootstrap_interval(scores, "iqm", seed=seed),
        mean=stats.bootstrap_interval(scores, "mean", seed=seed),
        fraction_solved=solved,
        reward_threshold=reward_threshold,
    )


def profile_thresholds(scores: Sequence[np.ndarray], num: int = 50) -> np.ndarray:
    """(num,) thresholds spanning every run's scores, for performance profiles drawn together."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
    low, high = float(values.min()), float(values.max())
    if high == low:
        high = low + 1.0
    margin = 0.05 * (high - low)
    return np.linspace(low - margin, high + margin, num)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Several multi-seed runs side by side, each against the first."""

    names: list[str]
    summaries: list[Summary]
    improvement: list[stats.Interval | None]
    """P(a seed of run i beats a seed of the first run); None for the first."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [
                {
                    "name": name,
                    **summary.to_dict(),
                    "probability_of_improvement_over_first": (None if p is None else p.to_dict()),
                }
                for name, summary, p in zip(
                    self.names, self.summaries, self.improvement, strict=True
                )
            ]
        }


def compare(runs: Sequence[SeedRuns], seed: int = 0) -> Comparison:
    """Summaries of each run's final scores and each run's probability of improvement over the
    first; QlearnError for fewer than two runs."""
    if len(runs) < 2:
        raise QlearnError(f"compare needs at least two multi-seed runs, got {len(runs)}")
    first = runs[0].final_scores
    improvement: list[stats.Interval | None] = [None]
    for run in runs[1:]:
        improvement.append(stats.probability_of_improvement(run.final_scores, first, seed=seed))
    return Comparison(
        names=[run.name for run in runs],
        summaries=[summarize(r.final_scores, r.reward_threshold, seed) for r in runs],
        improvement=improvement,
    )


def curve_summary(run: SeedRuns, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high), each (points,): the IQM of the seeds' curves with its 95% band."""
    return stats.curve_band(run.curves, "iqm", seed=seed)


def format_interval(interval: stats.Interval) -> str:
    """`412.3 [380.1, 450.0]`, or the estimate alone for a single run."""
    if math.isnan(interval.low):
        return f"{interval.estimate:.1f}"
    return f"{interval.estimate:.1f} [{interval.low:.1f}, {interval.high:.1f}]"


def figure(runs: Sequence[SeedRuns], seed: int = 0) -> Figure:
    """Two panels: each run's IQM learning curve with its 95% band (seeds as thin lines when
    there is one run), and each run's performance profile of final scores with its band."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    thresholds = profile_thresholds([r.final_scores for r in runs])
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        label = f"{run.name} ({len(run.seeds)} seeds)"
        if len(runs) == 1:
            for curve in run.curves:
                left.plot(run.steps, curve, color=color, alpha=0.2, lw=0.7)
        estimate, low, high = curve_summary(run, seed)
        left.plot(run.steps, estimate, color=color, lw=2, label=f"{label}: IQM")
        if len(run.seeds) > 1:
            left.fill_between(run.steps, low, high, color=color, alpha=0.25)
        fractions, lows, highs = stats.performance_profile(run.final_scores, thresholds, seed=seed)
        right.plot(thresholds, fractions, color=color, lw=2, label=label)
        if len(run.seeds) > 1:
            right.fill_between(thresholds, lows, highs, color=color, alpha=0.25)
    threshold = runs[0].reward_threshold
    for ax in (left, right) if threshold is not None else ():
        line = ax.axhline if ax is left else ax.axvline
        line(threshold, color="gray", ls="--", lw=1, label=f"solved ({threshold:g})")
    left.set_xlabel("env steps")
    left.set_ylabel("evaluation return")
    left.set_title("learning curve: IQM over seeds, 95% bootstrap band")
    right.set_xlabel("final evaluation return tau")
    right.set_ylabel("fraction of seeds scoring > tau")
    right.set_title("performance profile, 95% bootstrap band")
    right.set_ylim(-0.02, 1.02)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(runs[0].env_id)
    fig.tight_layout()
    return fig


def write_figure(runs: Sequence[SeedRuns], out: str | Path, seed: int = 0) -> Path:
    """Write `figure(runs)` atomically to `out` (.png, .svg or .pdf) and return the path."""
    import matplotlib.pyplot as plt

    out = check_output_path(out)
    fig = figure(runs, seed)
    try:
        with atomic_output(out) as f:
            fig.savefig(f, format=out.suffix[1:].lower())
    finally:
        plt.close(fig)
    return out
