"""Honest summaries of many runs: IQM, bootstrap intervals, improvement odds, profiles.

After Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice": a handful of
runs calls for an aggregate that is robust to an outlier seed and for an interval that says how
much it could move with other seeds.

- `iqm`: the interquartile mean, the mean of the middle 50% of scores. Less swayed by one lucky
  or failed seed than the mean, less wasteful of the data than the median.
- `bootstrap_interval`: a percentile bootstrap confidence interval of IQM, mean or median. With
  scores of several tasks, runs are resampled within each task (stratified), so every resample
  keeps the design's number of runs per task.
- `probability_of_improvement`: P(X > Y) + P(X = Y) / 2 for a run of algorithm X against one of
  Y, with its interval.
- `performance_profile`: the fraction of runs scoring above each threshold, with intervals.
- `curve_band`: a learning curve's aggregate and interval at every evaluation point.

The resampling is scipy's (`scipy.stats.bootstrap`, percentile method, as in rliable); only the
statistics are written here. Score arrays are `(runs,)` for one task or `(runs, tasks)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import scipy.stats

from qlearn.errors import ConfigError

Statistic = Literal["iqm", "mean", "median"]
STATISTICS: tuple[str, ...] = ("iqm", "mean", "median")
NUM_RESAMPLES = 2_000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval; `low`/`high` are NaN for one run."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.estimate:.4g}"
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def iqm(scores: np.ndarray | Sequence[float], axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean after dropping the lowest and highest 25% of scores.

    Over all scores when `axis` is None (a (runs, tasks) array is pooled, as in rliable's
    aggregate IQM). `scipy.stats.trim_mean` drops int(0.25 n) scores at each end: of
    [1, ..., 8] it keeps 3, 4, 5, 6, whose mean is 4.5.
    """
    return scipy.stats.trim_mean(np.asarray(scores, dtype=np.float64), 0.25, axis=axis)


def _pooled(statistic: str) -> Callable[[np.ndarray], np.ndarray]:
    """The named statistic over the last axis of a (..., n) array."""
    if statistic == "iqm":
        return lambda x: iqm(x, axis=-1)
    if statistic == "mean":
        return lambda x: np.mean(x, axis=-1)
    if statistic == "median":
        return lambda x: np.median(x, axis=-1)
    raise ConfigError(f"statistic = {statistic!r} is unknown; allowed: {', '.join(STATISTICS)}")


def _as_runs_by_tasks(scores: np.ndarray | Sequence[float], name: str = "scores") -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(
            f"{name} has shape {np.shape(scores)}; allowed: (runs,) or (runs, tasks), non-empty"
        )
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} holds NaN or inf; every run needs a finite score")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence = {confidence!r} is invalid; allowed: 0 < confidence < 1")


def bootstrap_interval(
    scores: np.ndarray | Sequence[float],
    statistic: Statistic = "iqm",
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The statistic of `scores` with a stratified percentile-bootstrap confidence interval.

    Each resample draws, for every task independently, as many runs as the task has, with
    replacement; the statistic is taken over the pooled resample.

    Args:
        scores: (runs,) or (runs, tasks) final scores.
        statistic: `iqm`, `mean` or `median`.
        confidence: coverage of the interval.
        num_resamples: bootstrap resamples.
        seed: seeds the resampling (same seed, same interval).

    Returns:
        The statistic of all scores and its interval (NaN bounds for a single run).
    """
    _check_confidence(confidence)
    array = _as_runs_by_tasks(scores)
    pooled = _pooled(statistic)
    estimate = float(pooled(array.reshape(-1)))
    if array.shape[0] < 2:
        return Interval(estimate, math.nan, math.nan)

    def stat(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
        # Each task's resample is (..., runs); pool them along the last axis.
        return pooled(np.concatenate(tasks, axis=-1))

    samples = tuple(array[:, j] for j in range(array.shape[1]))
    low, high = _resample(samples, stat, confidence, num_resamples, seed)
    return Interval(estimate, float(low), float(high))


def _resample(
    samples: tuple[np.ndarray, ...],
    stat: Callable[..., np.ndarray],
    confidence: float,
    num_resamples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """scipy's percentile bootstrap; an all-equal sample gives the point itself, not a warning."""
    if all(np.ptp(s) == 0 for s in samples):
        value = np.asarray(stat(*samples))
        return value, value.copy()
    result = scipy.stats.bootstrap(
        samples,
        stat,
        n_resamples=num_resamples,
        vectorized=True,
        paired=False,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def probability_of_improvement(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """P(X > Y) + P(X = Y) / 2 for a random run X of `x` against a random run Y of `y`.

    The Mann-Whitney U statistic over n m: 0.5 when neither algorithm is better, 1 when every
    run of `x` beats every run of `y`. The interval resamples both sets of runs independently.

    Args:
        x: (n,) final scores of the algorithm claimed better.
        y: (m,) final scores of the one it is compared with.
    """
    _check_confidence(confidence)
    a = _as_runs_by_tasks(x, "x")[:, 0]
    b = _as_runs_by_tasks(y, "y")[:, 0]

    def stat(xs: np.ndarray, ys: np.ndarray, axis: int = -1) -> np.ndarray:
        wins = xs[..., :, None] > ys[..., None, :]  # (..., n, m)
        ties = xs[..., :, None] == ys[..., None, :]
        return (wins.mean(axis=(-2, -1)) + 0.5 * ties.mean(axis=(-2, -1))).astype(np.float64)

    estimate = float(stat(a, b))
    if len(a) < 2 or len(b) < 2:
        return Interval(estimate, math.nan, math.nan)
    low, high = _resample((a, b), stat, confidence, num_resamples, seed)
    return Interval(estimate, float(low), float(high))


def performance_profile(
    scores: np.ndarray | Sequence[float],
    thresholds: np.ndarray | Sequence[float],
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of runs scoring above each threshold, with stratified bootstrap intervals.

    Args:
        scores: (runs,) or (runs, tasks) final scores.
        thresholds: (k,) score thresholds tau.

    Returns:
        (fractions, lows, highs), each (k,): the share of all runs with score > tau.
    """
    _check_confidence(confidence)
    array = _as_runs_by_tasks(scores)
    taus = np.asarray(thresholds, dtype=np.float64).reshape(-1)

    def stat(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
        pooled = np.concatenate(tasks, axis=-1)  # (..., runs)
        # (k, ...): scipy takes the first axis of a vector-valued statistic as its outputs.
        return np.stack([(pooled > tau).mean(axis=-1) for tau in taus])

    fractions = (array.reshape(-1)[None, :] > taus[:, None]).mean(axis=1)
    if array.shape[0] < 2:
        nans = np.full_like(fractions, math.nan)
        return fractions, nans, nans.copy()
    samples = tuple(array[:, j] for j in range(array.shape[1]))
    low, high = _resample(samples, stat, confidence, num_resamples, seed)
    return fractions, np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def curve_band(
    curves: np.ndarray | Sequence[Sequence[float]],
    statistic: Statistic = "iqm",
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A learning curve's statistic over runs and its bootstrap interval, at every point.

    Args:
        curves: (runs, points): each run's score at the same evaluation steps.

    Returns:
        (estimate, low, high), each (points,).
    """
    _check_confidence(confidence)
    array = np.asarray(curves, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ConfigError(f"curves has shape {array.shape}; allowed: (runs, points), non-empty")
    if not np.isfinite(array).all():
        raise ConfigError("curves hold NaN or inf; every run needs a score at every point")
    pooled = _pooled(statistic)
    estimate = np.asarray(pooled(array.T), dtype=np.float64)  # (points,)
    if array.shape[0] < 2:
        nans = np.full_like(estimate, math.nan)
        return estimate, nans, nans.copy()
    low = np.empty_like(estimate)
    high = np.empty_like(estimate)
    for j in range(array.shape[1]):
        column = array[:, j]
        lo, hi = _resample((column,), lambda c, axis=-1: pooled(c), confidence, num_resamples, seed)
        low[j], high[j] = float(lo), float(hi)
    return estimate, low, high
