"""TabularMDP: construction from arrays, from a dict spec and from a toy-text env's table."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qlearn.errors import ConfigError, EnvError
from qlearn.planning import TabularMDP


def test_from_arrays_keeps_a_valid_model_read_only() -> None:
    P = np.array([[[0.5, 0.5]], [[0.0, 1.0]]])
    mdp = TabularMDP.from_arrays(P, [[1.0], [0.0]], [False, True])
    assert (mdp.num_states, mdp.num_actions) == (2, 1)
    np.testing.assert_array_equal(mdp.terminal, [False, True])
    with pytest.raises(ValueError, match="read-only"):
        mdp.P[0, 0, 0] = 1.0


@pytest.mark.parametrize(
    ("P", "R", "terminal", "message"),
    [
        (np.ones((2, 1)), np.zeros((2, 1)), None, r"P has shape \(2, 1\)"),
        (np.ones((2, 1, 3)) / 3, np.zeros((2, 1)), None, r"P has shape \(2, 1, 3\)"),
        ([[[0.5, 0.4]], [[0.0, 1.0]]], np.zeros((2, 1)), None, r"P\[0, 0\] sums to 0.9"),
        ([[[1.5, -0.5]], [[0.0, 1.0]]], np.zeros((2, 1)), None, "negative"),
        ([[[1.0, 0.0]], [[0.0, 1.0]]], np.zeros((2, 2)), None, r"R has shape \(2, 2\)"),
        ([[[1.0, 0.0]], [[0.0, 1.0]]], [[np.nan], [0.0]], None, "non-finite"),
        ([[[1.0, 0.0]], [[0.0, 1.0]]], np.zeros((2, 1)), [True], "terminal has shape"),
    ],
)
def test_from_arrays_refuses_malformed_models(
    P: object, R: object, terminal: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TabularMDP.from_arrays(P, R, terminal)


def test_from_spec_two_state_loop() -> None:
    mdp = TabularMDP.from_spec({0: {0: [(1.0, 1, 1.0)]}, 1: {0: [(1.0, 0, 2.0)]}})
    np.testing.assert_array_equal(mdp.P[:, 0, :], [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(mdp.R, [[1.0], [2.0]])
    assert not mdp.terminal.any()


def test_from_spec_expected_rewards_duplicates_and_terminals() -> None:
    spec = {
        0: {
            0: [(0.25, 1, 4.0), (0.25, 1, 0.0), (0.5, 2, -2.0)],  # state 1 listed twice
            1: [(1.0, 0, 0.0)],
        },
        1: {0: [(1.0, 2, 1.0)], 1: [(1.0, 1, 0.0)]},
    }
    mdp = TabularMDP.from_spec(spec, num_states=4)
    np.testing.assert_allclose(mdp.P[0, 0], [0.0, 0.5, 0.5, 0.0])
    assert mdp.R[0, 0] == pytest.approx(0.25 * 4.0 - 0.5 * 2.0)
    # state 2 only appears as a next state and state 3 nowhere: both terminal, as self-loops
    np.testing.assert_array_equal(mdp.terminal, [False, False, True, True])
    np.testing.assert_array_equal(mdp.P[2, :, 2], [1.0, 1.0])
    assert TabularMDP.from_spec(spec, terminal=[1]).terminal.tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "empty"),
        ({0: {0: [(1.0, 0, 0.0)]}, 1: {1: [(1.0, 0, 0.0)]}}, r"state 1 lists actions \[1\]"),
        ({0: {0: [(1.0, 0, 0.0)], 1: [(1.0, 0, 0.0)]}, 1: {0: [(1.0, 0, 0.0)]}}, "1 actions"),
        ({0: {0: [(0.7, 1, 0.0)]}}, r"P\[0, 0\] sums to 0.7"),
        ({0: {0: [(1.0, 1)]}}, "allowed: \\(probability, next_state >= 0, reward\\)"),
        ({-1: {0: [(1.0, 0, 0.0)]}}, "state -1"),
    ],
)
def test_from_spec_refuses_malformed_specs(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TabularMDP.from_spec(spec)


def test_from_env_frozenlake_slippery_by_hand() -> None:
    mdp = TabularMDP.from_env(gym.make("FrozenLake-v1"))
    assert (mdp.num_states, mdp.num_actions) == (16, 4)
    # holes 5, 7, 11, 12 and the goal 15
    assert np.flatnonzero(mdp.terminal).tolist() == [5, 7, 11, 12, 15]
    # left from the corner: slips up (stays), goes left (stays) or slips down (to 4)
    np.testing.assert_allclose(mdp.P[0, 0, [0, 4]], [2 / 3, 1 / 3])
    # right from 14: up to 10, right to the goal (reward 1), down stays at 14
    np.testing.assert_allclose(mdp.P[14, 2, [10, 14, 15]], [1 / 3, 1 / 3, 1 / 3])
    assert mdp.R[14, 2] == pytest.approx(1 / 3)
    # only 14 borders the goal; every move but left can slip into it
    assert np.flatnonzero(mdp.R.any(axis=1)).tolist() == [14]
    np.testing.assert_allclose(mdp.R[14], [0.0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(mdp.P.sum(axis=2), 1.0)


def test_from_env_taxi_marks_only_the_delivered_states_terminal() -> None:
    mdp = TabularMDP.from_env(gym.make("Taxi-v4"))
    assert (mdp.num_states, mdp.num_actions) == (500, 6)
    assert mdp.terminal.sum() == 4  # one per destination
    assert mdp.R.min() == -10.0  # an illegal pickup or drop-off


class NoModelEnv(gym.Env):
    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Discrete(2)


def test_from_env_without_a_table_is_an_env_error() -> None:
    with pytest.raises(EnvError, match="no known model"):
        TabularMDP.from_env(NoModelEnv())
    with pytest.raises(EnvError, match="Discrete"):
        TabularMDP.from_env(gym.make("CartPole-v1"))
