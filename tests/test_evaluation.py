"""Evaluation: success is defined per env with a goal (and nowhere else), seeds are checked,
and held-out episodes are never those of a periodic evaluation or of training.

The old rule, "return > 0", reported 0.000 on CliffWalking where every greedy episode reaches
the goal (returns are -1 a step) and 1.000 on CartPole, which has no goal at all.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qlearn.agents import TabularQAgent, evaluate_policy
from qlearn.config import MAX_SEED, TabularConfig
from qlearn.errors import ConfigError
from qlearn.evaluation import (
    GOALS,
    HELD_OUT_EVAL_SEED_OFFSET,
    PERIODIC_EVAL_SEED_OFFSET,
    goal_of,
    held_out_eval_seed,
    periodic_eval_seed,
    run_episodes,
)
from qlearn.planning import TabularMDP, value_iteration

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3


def optimal_policy(env: gym.Env) -> np.ndarray:
    return value_iteration(TabularMDP.from_env(env), 0.99).policy


def test_cliffwalking_reaching_the_goal_is_a_success_whatever_the_return() -> None:
    env = gym.make("CliffWalking-v1", max_episode_steps=50)
    result = evaluate_policy(env, optimal_policy(env), num_episodes=5, seed=0)
    # the 13-step path along the cliff: -1 per step, and every episode reaches the goal
    assert (result.mean_return, result.mean_length, result.success_rate) == (-13.0, 13.0, 1.0)
    # always up from the start (bottom-left corner, row 3): never at the goal, cut off at 50
    stuck = evaluate_policy(env, np.full(48, UP), num_episodes=2, seed=0)
    assert (stuck.mean_return, stuck.mean_length, stuck.success_rate) == (-50.0, 50.0, 0.0)
    assert stuck.successes.tolist() == [False, False]


def test_frozenlake_success_is_the_goal_cell_not_a_hole() -> None:
    env = gym.make("FrozenLake-v1", is_slippery=False)
    path = np.full(16, LEFT)
    path[[0, 4, 9]] = DOWN
    path[[8, 13, 14]] = RIGHT
    assert evaluate_policy(env, path, num_episodes=3, seed=0).success_rate == 1.0
    # right from the start, then down from state 1 into the hole at state 5: terminated, failed
    into_hole = np.full(16, DOWN)
    into_hole[0] = RIGHT
    result = evaluate_policy(env, into_hole, num_episodes=3, seed=0)
    assert (result.mean_length, result.success_rate) == (2.0, 0.0)
    # a reward schedule that pays for holes changes the returns, not what success means
    paid = gym.make("FrozenLake-v1", is_slippery=False, reward_schedule=(1, 5, 0))
    result = evaluate_policy(paid, into_hole, num_episodes=3, seed=0)
    assert (result.mean_return, result.success_rate) == (5.0, 0.0)


def test_taxi_success_is_a_delivery() -> None:
    env = gym.make("Taxi-v4")
    result = evaluate_policy(env, optimal_policy(env), num_episodes=20, seed=0)
    assert result.success_rate == 1.0
    # always "south": never delivers, so the 200-step limit truncates every episode
    stuck = evaluate_policy(env, np.zeros(500, dtype=int), num_episodes=2, seed=0)
    assert (stuck.mean_length, stuck.success_rate) == (200.0, 0.0)


def test_cartpole_reports_no_success_rate() -> None:
    env = gym.make("CartPole-v1")
    result = run_episodes(env, lambda obs: 0, num_episodes=3, seed=0)
    assert result.mean_return > 0  # what "return > 0" used to call a success
    assert result.success_rate is None and result.successes is None and result.goal is None
    assert "success_rate" not in result.summary()
    assert list(result.summary()) == [
        "mean_return",
        "std_return",
        "min_return",
        "max_return",
        "mean_length",
        "episodes",
    ]


def test_summary_has_the_success_rate_only_with_a_goal() -> None:
    env = gym.make("FrozenLake-v1", is_slippery=False)
    summary = run_episodes(env, lambda obs: LEFT, num_episodes=2, seed=0).summary()
    assert summary["success_rate"] == 0.0


def test_goal_table_is_matched_through_wrappers() -> None:
    assert goal_of(gym.make("FrozenLake8x8-v1")) is GOALS[type(gym.make("FrozenLake-v1").unwrapped)]
    assert goal_of(gym.make("CartPole-v1")) is None
    assert goal_of(gym.make("Blackjack-v1")) is None  # a win is no goal state


def test_training_metrics_count_successes_per_episode() -> None:
    cfg = TabularConfig(num_episodes=30, seed=0, max_episode_steps=200)
    metrics = TabularQAgent("CliffWalking-v1", cfg).learn()
    assert metrics.successes is not None
    # an episode succeeded exactly when it ended before the time limit
    np.testing.assert_array_equal(metrics.successes, metrics.episode_lengths < 200)


class Coin(gym.Env):
    """One step, reward 1 or 0 by the action: a discrete env with no goal."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: int) -> tuple:
        return 0, float(action), True, False, {}


def test_training_metrics_without_a_goal() -> None:
    metrics = TabularQAgent(Coin(), TabularConfig(num_episodes=3)).learn()
    assert metrics.successes is None and metrics.success_rate is None


@pytest.mark.parametrize("seed", [-1, -(2**40), 0.5, True, "1"])
def test_bad_seeds_are_refused(seed: object) -> None:
    """Gymnasium's own error for a negative seed used to escape as a traceback."""
    env = gym.make("CartPole-v1")
    with pytest.raises(ConfigError, match=r"seed = .* is (out of range|invalid); allowed: "):
        run_episodes(env, lambda obs: 0, num_episodes=1, seed=seed)  # type: ignore[arg-type]


seeds = st.integers(0, MAX_SEED)


@given(seed=seeds, index=st.integers(0, 10**12))
def test_held_out_seed_is_below_every_periodic_seed(seed: int, index: int) -> None:
    assert held_out_eval_seed(seed) < periodic_eval_seed(seed, index)


@given(seed=seeds, step=st.integers(0, 10**9 - 1))
def test_training_resets_stay_below_the_evaluation_seeds(seed: int, step: int) -> None:
    """A (resumed) training run resets with seed + step."""
    assert seed + step < held_out_eval_seed(seed)


def test_the_seeds_fit_minatar() -> None:
    """MinAtar seeds numpy's RandomState, which takes seeds below 2**32."""
    assert HELD_OUT_EVAL_SEED_OFFSET < PERIODIC_EVAL_SEED_OFFSET
    assert periodic_eval_seed(10**6, 10**6) < 2**32
    assert periodic_eval_seed(3, 2) == 3 + PERIODIC_EVAL_SEED_OFFSET + 2
    assert held_out_eval_seed(3) == 3 + HELD_OUT_EVAL_SEED_OFFSET
