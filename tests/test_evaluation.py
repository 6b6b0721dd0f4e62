"""Evaluation: success is defined per env with a goal (and nowhere else), seeds are checked,
and held-out episodes are never those of a periodic evaluation or of training.

The old rule, "return > 0", reported 0.000 on CliffWalking where every greedy episode reaches
the goal (returns are -1 a step) and 1.000 on CartPole, which has no goal at all.
"""

from __future__ import annotations

import math
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qlearn import evaluation
from qlearn.agents import TabularQAgent, evaluate_policy
from qlearn.config import MAX_SEED, TabularConfig
from qlearn.errors import ConfigError
from qlearn.evaluation import (
    GOALS,
    HELD_OUT_EVAL_SEED_OFFSET,
    PERIODIC_EVAL_SEED_OFFSET,
    EvalResult,
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


# ---------------------------------------------------------------------- run_episodes and EvalResult


def test_eval_result_figures_by_hand() -> None:
    result = EvalResult(np.array([1.0, 2.0, 3.0, 6.0]), np.array([4, 5, 6, 9]))
    # mean 3; population std: sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5)
    assert result.mean_return == 3.0 and result.std_return == pytest.approx(math.sqrt(3.5))
    assert result.mean_length == 6.0 and result.success_rate is None
    assert result.summary() == pytest.approx(
        {
            "mean_return": 3.0,
            "std_return": math.sqrt(3.5),
            "min_return": 1.0,
            "max_return": 6.0,
            "mean_length": 6.0,
            "episodes": 4.0,
        }
    )
    with_goal = EvalResult(result.returns, result.lengths, np.array([True, False, True, True]), "G")
    assert with_goal.success_rate == 0.75
    assert list(with_goal.summary())[-2:] == ["success_rate", "episodes"]


class Countdown(gym.Env):
    """Observation: steps left. An episode lasts `start` steps, where `start` is 2 + the reset's
    draw from {0, 1, 2}; each step pays (action + 1) * steps left. Records every reset's seed."""

    observation_space = gym.spaces.Discrete(5)
    action_space = gym.spaces.Discrete(2)
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.left = 0
        self.reset_seeds: list[int | None] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.reset_seeds.append(seed)
        self.left = 2 + int(self.np_random.integers(3))
        return self.left, {}

    def step(self, action: int) -> tuple:
        reward = (action + 1) * self.left
        self.left -= 1
        return self.left, float(reward), self.left == 0, False, {}

    def render(self) -> np.ndarray:
        return np.full((2, 2, 3), self.left, dtype=np.uint8)


def test_run_episodes_returns_and_lengths_by_hand() -> None:
    env = Countdown()
    probe = Countdown()  # the starts seed 3 gives: the first reset seeded, later ones not
    starts = [probe.reset(seed=3)[0]] + [probe.reset()[0] for _ in range(3)]
    # action 1 when an odd number of steps is left: pays 2 * left then, else left
    result = run_episodes(env, lambda left: left % 2, num_episodes=4, seed=3)
    expected = [sum(n * (1 + n % 2) for n in range(1, start + 1)) for start in starts]
    assert result.returns.tolist() == expected and result.lengths.tolist() == starts
    assert env.reset_seeds == [3, None, None, None]
    again = run_episodes(Countdown(), lambda left: left % 2, num_episodes=4, seed=3)
    assert again.returns.tolist() == expected  # same seed, same episodes


def test_run_episodes_plays_the_episodes_of_a_loop_seeding_only_its_first_reset() -> None:
    """The benchmarks' old evaluation loop (speed.py's `_greedy_returns`): the same episodes."""

    def policy(obs: np.ndarray) -> int:
        return int(obs[2] > 0)  # pushes toward the lean: episodes of a few dozen steps

    env = gym.make("CartPole-v1")
    returns = []
    obs, _ = env.reset(seed=11)
    for _ in range(4):
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    result = run_episodes(gym.make("CartPole-v1"), policy, num_episodes=4, seed=11)
    assert result.returns.tolist() == returns
    assert len(set(returns)) > 1  # different episodes, not one replayed four times


class Endless(gym.Env):
    """Never terminates or truncates: only the cap ends its episodes."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: int) -> tuple:
        return 0, 0.5, False, False, {}


def test_episodes_are_cut_at_max_episode_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "MAX_EPISODE_STEPS", 40)
    result = run_episodes(Endless(), lambda obs: 0, num_episodes=2, seed=0)
    assert result.lengths.tolist() == [40, 40] and result.returns.tolist() == [20.0, 20.0]


def test_on_frame_gets_the_reset_frame_and_one_per_step() -> None:
    env = Countdown(render_mode="rgb_array")
    frames: list[np.ndarray] = []
    result = run_episodes(env, lambda obs: 0, num_episodes=3, seed=0, on_frame=frames.append)
    assert len(frames) == int(result.lengths.sum()) + 3
    # each episode: its start, then one frame per step down to 0
    expected = [n for length in result.lengths for n in range(length, -1, -1)]
    assert [int(frame[0, 0, 0]) for frame in frames] == expected


@pytest.mark.parametrize("num_episodes", [0, -1])
def test_run_episodes_needs_an_episode(num_episodes: int) -> None:
    with pytest.raises(ConfigError, match=rf"num_episodes = {num_episodes} is out of range"):
        run_episodes(Endless(), lambda obs: 0, num_episodes=num_episodes, seed=0)
