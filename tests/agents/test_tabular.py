"""Tabular Q-learning: the update, the loop against a replay, schedules, and learning thresholds."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from qlearn.agents import (
    EpisodeMetrics,
    TabularQAgent,
    evaluate_policy,
    make_tabular_env,
    q_update,
)
from qlearn.config import TabularConfig
from qlearn.errors import ConfigError, EnvError

# FrozenLake actions
LEFT, DOWN, RIGHT, UP = range(4)


def test_q_update_hand_computed() -> None:
    # target 1 + 0.9 * 2 = 2.8; 0.9 * 0.5 + 0.1 * 2.8 = 0.73
    assert q_update(0.5, 1.0, 2.0, False, 0.1, 0.9) == pytest.approx(0.73)
    # terminated: target is the reward alone; 0.9 * 0.5 + 0.1 * 1 = 0.55
    assert q_update(0.5, 1.0, 2.0, True, 0.1, 0.9) == pytest.approx(0.55)
    # alpha = 1 replaces Q by the target; gamma = 0 ignores the next state
    assert q_update(0.5, -1.0, 7.0, False, 1.0, 0.9) == pytest.approx(-1.0 + 6.3)
    assert q_update(0.5, 3.0, 100.0, False, 0.5, 0.0) == pytest.approx(1.75)


class Recorder(gym.Wrapper):
    """Logs every (s, a, r, s', terminated, truncated) the agent sees."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.log: list[tuple[int, int, float, int, bool, bool]] = []
        self.state = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.state, info = self.env.reset(**kwargs)
        return self.state, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        next_state, reward, terminated, truncated, info = self.env.step(action)
        self.log.append((self.state, int(action), float(reward), next_state, terminated, truncated))
        self.state = next_state
        return next_state, reward, terminated, truncated, info


def test_learn_applies_the_bellman_update_to_every_transition() -> None:
    # Rewards on every step (goal 1, hole -1, ice -0.1) and a 6-step limit, so the log has
    # terminations and truncations and every update moves the table.
    env = gym.make("FrozenLake-v1", reward_schedule=(1.0, -1.0, -0.1), max_episode_steps=6)
    env = Recorder(env)
    cfg = TabularConfig(num_episodes=300, alpha=0.3, gamma=0.9, seed=3)
    agent = TabularQAgent(env, cfg)
    agent.learn()
    kinds = {(term, trunc) for *_, term, trunc in env.log}
    assert {(False, False), (True, False), (False, True)} <= kinds

    def replay(bootstrap_truncated: bool) -> np.ndarray:
        q = np.zeros((16, 4))
        for s, a, r, s2, terminated, truncated in env.log:
            end = terminated or (truncated and not bootstrap_truncated)
            target = r if end else r + 0.9 * q[s2].max()
            q[s, a] += 0.3 * (target - q[s, a])
        return q

    np.testing.assert_allclose(agent.q_table, replay(bootstrap_truncated=True), atol=1e-12)
    # the check can tell: cutting truncated transitions off gives another table
    assert not np.allclose(agent.q_table, replay(bootstrap_truncated=False))


def test_q_table_starts_at_zero_with_one_row_per_state() -> None:
    agent = TabularQAgent("Taxi-v4")
    assert agent.q_table.shape == (500, 6)
    assert not agent.q_table.any()


def test_non_discrete_env_is_an_env_error() -> None:
    with pytest.raises(EnvError, match=r"CartPole-v1.*allowed: Discrete observations"):
        TabularQAgent("CartPole-v1")


def test_bad_env_kwargs_are_env_errors() -> None:
    with pytest.raises(EnvError, match="is_slipery"):
        make_tabular_env("FrozenLake-v1", is_slipery=False)
    with pytest.raises(EnvError, match="5x5"):
        make_tabular_env("FrozenLake-v1", map_name="5x5")
    with pytest.raises(EnvError, match="unknown env id"):
        make_tabular_env("FrozenLak-v1")


def test_env_kwargs_need_an_env_id() -> None:
    with pytest.raises(ConfigError, match="env id"):
        TabularQAgent(gym.make("FrozenLake-v1"), is_slippery=False)


def test_same_seed_same_q_table_other_seed_other_table() -> None:
    def table(seed: int) -> np.ndarray:
        # Taxi's -1 per step fills the table from the first episode on.
        agent = TabularQAgent("Taxi-v4", TabularConfig(num_episodes=20, seed=seed))
        agent.learn()
        return agent.q_table

    first = table(5)
    assert first.any()
    np.testing.assert_array_equal(first, table(5))
    assert not np.array_equal(first, table(6))


def test_linear_and_exponential_epsilon_schedules() -> None:
    linear = TabularQAgent(
        "FrozenLake-v1",
        TabularConfig(num_episodes=100, epsilon_end=0.1, exploration_fraction=0.5),
    )
    assert linear.epsilon(0) == 1.0
    assert linear.epsilon(25) == pytest.approx(0.55)
    assert linear.epsilon(50) == pytest.approx(0.1)
    assert linear.epsilon(99) == pytest.approx(0.1)
    exponential = TabularQAgent(
        "FrozenLake-v1",
        TabularConfig(epsilon_decay="exponential", epsilon_decay_rate=0.5, epsilon_end=0.05),
    )
    assert exponential.epsilon(3) == 0.125
    assert exponential.epsilon(10) == 0.05


def test_learn_reports_each_episode_and_continues_where_it_stopped() -> None:
    agent = TabularQAgent("FrozenLake-v1", TabularConfig(num_episodes=40, exploration_fraction=1.0))
    seen: list[EpisodeMetrics] = []
    first = agent.learn(callback=seen.append)
    second = agent.learn(10, callback=seen.append)
    assert [m.episode for m in seen] == list(range(50))
    np.testing.assert_array_equal(first.episode_returns, [m.episode_return for m in seen[:40]])
    np.testing.assert_array_equal(second.episode_lengths, [m.length for m in seen[40:]])
    # the schedule goes on: episode 40 of 40 is past the linear decay
    np.testing.assert_allclose(first.epsilons, [agent.epsilon(i) for i in range(40)])
    assert second.epsilons[0] == pytest.approx(0.01)


def test_evaluate_policy_known_answers() -> None:
    env = make_tabular_env("FrozenLake-v1", is_slippery=False)
    # down, down, right, down, right, right: the 6-step path around the holes
    path = np.full(16, LEFT)
    path[[0, 4, 9]] = DOWN
    path[[8, 13, 14]] = RIGHT
    result = evaluate_policy(env, path, num_episodes=5, seed=0)
    assert (result.mean_return, result.success_rate, result.mean_length) == (1.0, 1.0, 6.0)
    # always left: never moves from the start, so the 100-step limit truncates every episode
    stuck = evaluate_policy(env, np.full(16, LEFT), num_episodes=3, seed=0)
    assert (stuck.mean_return, stuck.success_rate, stuck.mean_length) == (0.0, 0.0, 100.0)
    with pytest.raises(ConfigError, match="policy"):
        evaluate_policy(env, np.zeros(15, dtype=int), num_episodes=1)


def test_frozenlake_non_slippery_reaches_the_goal_every_time() -> None:
    cfg = TabularConfig(
        num_episodes=2_000, alpha=0.5, gamma=0.95, epsilon_end=0.1, exploration_fraction=1.0, seed=0
    )
    agent = TabularQAgent("FrozenLake-v1", cfg, is_slippery=False)
    agent.learn()
    result = agent.evaluate(num_episodes=100, seed=0)
    assert result.success_rate == 1.0
    assert result.mean_length == 6.0  # the shortest path


def test_softmax_exploration_learns_non_slippery_frozenlake() -> None:
    cfg = TabularConfig(
        num_episodes=1_000, alpha=0.5, gamma=0.95, exploration="softmax", temperature=0.1
    )
    agent = TabularQAgent("FrozenLake-v1", cfg, is_slippery=False)
    metrics = agent.learn()
    assert np.isnan(metrics.epsilons).all()
    assert agent.evaluate(num_episodes=100, seed=0).success_rate == 1.0


@pytest.mark.slow
def test_frozenlake_slippery_success_at_least_0_70() -> None:
    cfg = TabularConfig(num_episodes=5_000, alpha=0.1, gamma=0.99, seed=0)
    agent = TabularQAgent("FrozenLake-v1", cfg)
    agent.learn()
    result = agent.evaluate(num_episodes=1_000, seed=1)
    assert result.success_rate >= 0.70
    # the Q-table's greedy policy is the optimal one at every state that matters
    # (state 6 has two equally good actions, left and right)
    policy = agent.greedy_policy()
    optimal = {0: LEFT, 1: UP, 2: UP, 3: UP, 4: LEFT, 8: UP, 9: DOWN, 10: LEFT, 13: RIGHT, 14: DOWN}
    assert {s: int(policy[s]) for s in optimal} == optimal


@pytest.mark.slow
def test_taxi_mean_return_at_least_7() -> None:
    # Gymnasium 1.4 retired Taxi-v3 for Taxi-v4, the same deterministic task by default.
    cfg = TabularConfig(num_episodes=2_000, alpha=0.5, gamma=0.99, seed=0)
    agent = TabularQAgent("Taxi-v4", cfg)
    agent.learn()
    result = agent.evaluate(num_episodes=1_000, seed=1)
    assert result.mean_return >= 7.0
    assert result.success_rate == 1.0
