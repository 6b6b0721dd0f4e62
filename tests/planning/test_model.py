"""Model estimation: counts to probabilities, unvisited pairs, and planning on the estimate."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qlearn.agents import evaluate_policy, make_tabular_env
from qlearn.errors import EnvError
from qlearn.planning import (
    TabularMDP,
    TransitionCounts,
    collect_transitions,
    counts_to_probabilities,
    estimate_and_plan,
    value_iteration,
)


def test_counts_4_and_6_give_probabilities_0_4_and_0_6() -> None:
    counts = TransitionCounts(num_states=3, num_actions=1)
    for _ in range(4):
        counts.record(0, 0, 1.0, 1, terminated=False)
    for _ in range(6):
        counts.record(0, 0, 0.0, 2, terminated=False)
    p = counts.probabilities()
    assert p[0, 0, 1] == 0.4
    assert p[0, 0, 2] == 0.6
    assert p[0, 0, 0] == 0.0
    assert counts.visits[0, 0] == 10
    # the mean reward: 4 of 10 transitions paid 1
    assert counts.to_mdp().R[0, 0] == pytest.approx(0.4)


def test_counts_to_probabilities_leaves_empty_rows_at_zero() -> None:
    out = counts_to_probabilities(np.array([[0, 4, 6], [0, 0, 0], [3, 0, 1]]))
    np.testing.assert_array_equal(out, [[0.0, 0.4, 0.6], [0.0, 0.0, 0.0], [0.75, 0.0, 0.25]])


def test_unvisited_pairs_become_reward_free_self_loops() -> None:
    counts = TransitionCounts(num_states=3, num_actions=2)
    counts.record(0, 0, 1.0, 1, terminated=False)
    counts.record(1, 1, 5.0, 2, terminated=True)
    mdp = counts.to_mdp()
    np.testing.assert_array_equal(counts.visited, [[True, False], [False, True], [False, False]])
    np.testing.assert_array_equal(mdp.P[0, 1], [1.0, 0.0, 0.0])  # untried: stays
    np.testing.assert_array_equal(mdp.P[1, 0], [0.0, 1.0, 0.0])
    assert mdp.R[0, 1] == mdp.R[1, 0] == 0.0
    np.testing.assert_array_equal(mdp.terminal, [False, False, True])
    # planning on it: 0 -(1)-> 1 -(5)-> end, so V(0) = 1 + 0.9 * 5
    result = value_iteration(mdp, 0.9)
    np.testing.assert_allclose(result.values, [5.5, 5.0, 0.0])
    assert result.policy[:2].tolist() == [0, 1]


def test_collect_transitions_counts_every_step_and_learns_the_dynamics() -> None:
    env = make_tabular_env("FrozenLake-v1")
    counts = collect_transitions(env, 300, seed=0)
    true = TabularMDP.from_env(env)
    # every step is counted once: replaying the same seed gives the same number of steps
    again = collect_transitions(make_tabular_env("FrozenLake-v1"), 300, seed=0)
    np.testing.assert_array_equal(counts.counts, again.counts)
    # transitions only go where the true model allows
    assert not np.any((counts.counts > 0) & (true.P == 0))
    # the start state is visited often enough for its estimate to be close
    np.testing.assert_allclose(counts.probabilities()[0], true.P[0], atol=0.1)
    # terminations mark only true terminal states, and the hole next to the start is found
    assert set(np.flatnonzero(counts.terminal).tolist()) <= {5, 7, 11, 12, 15}
    assert counts.terminal[5]


def test_collect_transitions_needs_discrete_spaces() -> None:
    with pytest.raises(EnvError, match="Discrete"):
        collect_transitions(gym.make("CartPole-v1"), 1)


def test_planning_on_the_estimated_model_matches_the_true_model_on_frozenlake() -> None:
    env = make_tabular_env("FrozenLake-v1")
    true_plan = value_iteration(TabularMDP.from_env(env), 0.99)
    estimate = estimate_and_plan(make_tabular_env("FrozenLake-v1"), 0.99, seed=0)
    true_success = evaluate_policy(env, true_plan.policy, num_episodes=1_000, seed=1)
    est_success = evaluate_policy(env, estimate.plan.policy, num_episodes=1_000, seed=2)
    assert true_success.success_rate > 0.7
    assert abs(est_success.success_rate - true_success.success_rate) <= 0.05
    # the estimate itself is close where the explorer went often: with n > 500 samples a
    # probability of 1/3 has a standard error below 0.021, so 0.1 is about 5 of them
    well_visited = estimate.counts.visits > 500
    assert well_visited.sum() > 10
    np.testing.assert_allclose(
        estimate.mdp.P[well_visited], TabularMDP.from_env(env).P[well_visited], atol=0.1
    )
