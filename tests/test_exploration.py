"""Exploration: schedules, epsilon-greedy and softmax against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlearn.errors import ConfigError
from qlearn.exploration import (
    epsilon_greedy,
    exponential_schedule,
    linear_schedule,
    softmax_action,
    softmax_probs,
)


def test_softmax_probs_match_hand_computed_values() -> None:
    # exp(0) : exp(ln 2) = 1 : 2
    np.testing.assert_allclose(softmax_probs(np.array([0.0, math.log(2)]), 1.0), [1 / 3, 2 / 3])
    # Doubling both Q and T leaves Q / T, so the probabilities, unchanged.
    np.testing.assert_allclose(softmax_probs(np.array([0.0, 2 * math.log(2)]), 2.0), [1 / 3, 2 / 3])
    # e^1, e^2, e^3 over their sum
    total = math.e + math.e**2 + math.e**3
    np.testing.assert_allclose(
        softmax_probs(np.array([1.0, 2.0, 3.0]), 1.0),
        [math.e / total, math.e**2 / total, math.e**3 / total],
    )


def test_softmax_probs_are_stable_for_large_values_and_work_on_batches() -> None:
    np.testing.assert_allclose(softmax_probs(np.array([1000.0, 1000.0]), 1.0), [0.5, 0.5])
    batch = softmax_probs(np.array([[0.0, math.log(3)], [5.0, 5.0]]), 1.0)
    np.testing.assert_allclose(batch, [[0.25, 0.75], [0.5, 0.5]])


def test_softmax_temperature_extremes() -> None:
    q = np.array([1.0, 2.0, 0.0])
    np.testing.assert_allclose(softmax_probs(q, 1e-3), [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(softmax_probs(q, 1e6), [1 / 3] * 3, atol=1e-5)
    with pytest.raises(ConfigError, match="temperature"):
        softmax_probs(q, 0.0)


def test_softmax_action_frequencies_follow_the_probabilities() -> None:
    rng = np.random.default_rng(0)
    q = np.array([0.0, math.log(2), math.log(5)])  # probabilities 1/8, 2/8, 5/8
    n = 40_000
    counts = np.bincount([softmax_action(q, 1.0, rng) for _ in range(n)], minlength=3)
    expected = np.array([1, 2, 5]) / 8
    # 4 standard deviations of a binomial proportion
    np.testing.assert_allclose(counts / n, expected, atol=4 * math.sqrt(0.25 / n))
    batch = softmax_action(np.tile(q, (n, 1)), 1.0, rng)
    np.testing.assert_allclose(
        np.bincount(batch, minlength=3) / n, expected, atol=4 * math.sqrt(0.25 / n)
    )


def test_epsilon_zero_is_greedy_with_ties_to_the_lowest_action() -> None:
    rng = np.random.default_rng(0)
    q = np.array([0.0, 3.0, 1.0, 3.0])
    assert {epsilon_greedy(q, 0.0, rng) for _ in range(200)} == {1}
    batch = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(epsilon_greedy(batch, 0.0, rng), [0, 1, 0])


def test_epsilon_one_is_uniform_and_ignores_q() -> None:
    rng = np.random.default_rng(1)
    q = np.array([0.0, 0.0, 10.0, 0.0])
    n = 20_000
    counts = np.bincount([epsilon_greedy(q, 1.0, rng) for _ in range(n)], minlength=4)
    np.testing.assert_allclose(counts / n, [0.25] * 4, atol=4 * math.sqrt(0.25 * 0.75 / n))
    batch = epsilon_greedy(np.tile(q, (n, 1)), 1.0, rng)
    np.testing.assert_allclose(
        np.bincount(batch, minlength=4) / n, [0.25] * 4, atol=4 * math.sqrt(0.25 * 0.75 / n)
    )


def test_epsilon_half_picks_greedy_with_probability_one_half_plus_share() -> None:
    rng = np.random.default_rng(2)
    q = np.array([0.0, 1.0])
    n = 20_000
    greedy = sum(epsilon_greedy(q, 0.5, rng) == 1 for _ in range(n)) / n
    # 0.5 greedy + 0.5 * 1/2 of the random choices
    assert greedy == pytest.approx(0.75, abs=4 * math.sqrt(0.75 * 0.25 / n))


@pytest.mark.parametrize("epsilon", [-0.1, 1.5, float("nan")])
def test_epsilon_out_of_range_is_a_config_error(epsilon: float) -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        epsilon_greedy(np.zeros(3), epsilon, np.random.default_rng(0))


def test_linear_schedule_hand_values() -> None:
    assert linear_schedule(1.0, 0.1, 10, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 10, 5) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 10, 10) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 10, 25) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 0, 3) == 0.1


def test_exponential_schedule_hand_values() -> None:
    assert exponential_schedule(1.0, 0.05, 0.5, 0) == 1.0
    assert exponential_schedule(1.0, 0.05, 0.5, 3) == 0.125
    assert exponential_schedule(1.0, 0.05, 0.5, 10) == 0.05  # 0.5**10 < floor
