"""qlearn.stats against hand-computed values and an independent numpy bootstrap."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlearn import stats
from qlearn.errors import ConfigError


def test_iqm_hand_values() -> None:
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([0, 0, 0, 100]) == pytest.approx(0.0)  # one outlier of four is dropped
    assert stats.iqm([[1, 5], [2, 6], [3, 7], [4, 8]]) == pytest.approx(4.5)  # pooled


def test_iqm_ignores_one_outlier_the_mean_does_not() -> None:
    scores = [500.0] * 7 + [9.0]
    assert stats.iqm(scores) == 500.0
    assert np.mean(scores) < 440


def test_interval_matches_an_independent_numpy_bootstrap() -> None:
    scores = np.random.default_rng(3).normal(100.0, 20.0, size=16)
    got = stats.bootstrap_interval(scores, "mean", num_resamples=4_000, seed=1)
    rng = np.random.default_rng(7)
    means = scores[rng.integers(0, 16, size=(20_000, 16))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert got.estimate == pytest.approx(scores.mean())
    # Two Monte Carlo estimates of the same percentiles: agree to a fraction of the width.
    width = high - low
    assert abs(got.low - low) < 0.08 * width and abs(got.high - high) < 0.08 * width


def test_stratified_resampling_keeps_runs_per_task() -> None:
    # Task A scores 0 in every run, task B 10. A stratified resample always holds four of
    # each, so the pooled IQM of [0,0,0,0,10,10,10,10] (= 5) never moves; an unstratified
    # resample of the eight pooled scores would.
    scores = np.array([[0.0, 10.0]] * 4)
    interval = stats.bootstrap_interval(scores, "iqm")
    assert (interval.estimate, interval.low, interval.high) == (5.0, 5.0, 5.0)
    pooled = stats.bootstrap_interval(scores.reshape(-1), "iqm")
    assert pooled.low < 5.0 < pooled.high


def test_interval_is_reproducible_and_narrows_with_more_runs() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.normal(size=8), rng.normal(size=128)
    a = stats.bootstrap_interval(few, seed=4)
    assert a == stats.bootstrap_interval(few, seed=4)
    b = stats.bootstrap_interval(many, seed=4)
    assert b.high - b.low < a.high - a.low
    assert a.low <= a.estimate <= a.high


def test_one_run_has_no_interval() -> None:
    interval = stats.bootstrap_interval([42.0])
    assert interval.estimate == 42.0 and math.isnan(interval.low) and math.isnan(interval.high)
    assert str(interval) == "42"


def test_probability_of_improvement_hand_values() -> None:
    assert stats.probability_of_improvement([3, 4], [1, 2]).estimate == 1.0
    assert stats.probability_of_improvement([1, 2], [3, 4]).estimate == 0.0
    # Pairs: (1,1) tie, (1,2) loss, (3,1) win, (3,2) win -> (2 + 0.5) / 4.
    assert stats.probability_of_improvement([1, 3], [1, 2]).estimate == pytest.approx(0.625)
    same = stats.probability_of_improvement([5, 5, 5], [5, 5])
    assert (same.estimate, same.low, same.high) == (0.5, 0.5, 0.5)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=2, max_size=8),
    st.lists(st.integers(-5, 5), min_size=2, max_size=8),
)
def test_probability_of_improvement_is_symmetric(x: list[int], y: list[int]) -> None:
    forward = stats.probability_of_improvement(x, y, num_resamples=50).estimate
    backward = stats.probability_of_improvement(y, x, num_resamples=50).estimate
    assert forward + backward == pytest.approx(1.0)


def test_performance_profile_hand_values() -> None:
    fractions, low, high = stats.performance_profile([1, 2, 3, 4], [0, 2, 4])
    np.testing.assert_allclose(fractions, [1.0, 0.5, 0.0])
    assert low.shape == high.shape == (3,)
    assert low[0] == high[0] == 1.0 and low[2] == high[2] == 0.0  # every resample agrees
    assert low[1] < 0.5 < high[1]


def test_curve_band_per_point() -> None:
    curves = np.array([[0.0, 10.0, 20.0], [0.0, 12.0, 22.0], [0.0, 14.0, 24.0], [0.0, 16, 26]])
    estimate, low, high = stats.curve_band(curves, "mean")
    np.testing.assert_allclose(estimate, [0.0, 13.0, 23.0])
    assert low[0] == high[0] == 0.0
    assert (low[1:] < estimate[1:]).all() and (estimate[1:] < high[1:]).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.bootstrap_interval([]), "shape"),
        (lambda: stats.bootstrap_interval([1.0, math.nan]), "NaN"),
        (lambda: stats.bootstrap_interval([1.0, 2.0], "mode"), "statistic = 'mode'"),
        (lambda: stats.bootstrap_interval([1.0, 2.0], confidence=1.5), "confidence = 1.5"),
        (lambda: stats.curve_band(np.zeros(3)), "runs, points"),
    ],
)
def test_bad_input_is_named(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        call()
