"""Value iteration, policy iteration and exact policy evaluation against known answers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qlearn.errors import ConfigError
from qlearn.planning import (
    TabularMDP,
    policy_iteration,
    policy_values,
    q_from_values,
    value_iteration,
)

GAMMA = 0.9


def two_state() -> TabularMDP:
    """State 1 -> state 2 with reward +1, state 2 -> state 1 with reward +2 (indices 0 and 1)."""
    return TabularMDP.from_spec({0: {0: [(1.0, 1, 1.0)]}, 1: {0: [(1.0, 0, 2.0)]}})


def discounted_sum_of_first_rewards(n: int, gamma: float = GAMMA) -> float:
    """Independent answer: sum_{k<n} gamma^k r_k for the rewards +1, +2, +1, +2, ..."""
    return sum(gamma**k * (1.0 if k % 2 == 0 else 2.0) for k in range(n))


def test_two_state_converges_to_2_8_over_0_19() -> None:
    result = value_iteration(two_state(), GAMMA, tolerance=1e-12)
    # V1 = 1 + 0.9 V2, V2 = 2 + 0.9 V1  =>  V1 = 2.8 / 0.19, V2 = 2.9 / 0.19
    np.testing.assert_allclose(result.values, [2.8 / 0.19, 2.9 / 0.19], atol=1e-10)
    assert result.values[0] == pytest.approx(14.7368421, abs=1e-7)


def test_two_state_history_is_the_discounted_sum_of_the_first_n_rewards() -> None:
    result = value_iteration(two_state(), GAMMA, tolerance=1e-12)
    history = result.history[:, 0]
    assert history[0] == 0.0
    # sweeps 1..5 by hand: 1, 1 + 0.9*2, + 0.81*1, + 0.729*2, + 0.6561*1
    np.testing.assert_allclose(history[1:6], [1.0, 2.8, 3.61, 5.068, 5.7241], atol=1e-12)
    assert history[74] == pytest.approx(14.7307838, abs=5e-8)
    assert history[102] == pytest.approx(14.7365250, abs=5e-8)
    for n in range(result.num_sweeps + 1):
        assert history[n] == pytest.approx(discounted_sum_of_first_rewards(n), abs=1e-10)
    # the closed form of the same sum: (1 + 2 gamma)(1 - gamma^n) / (1 - gamma^2) for even n
    for n in (74, 102):
        closed = (1 + 2 * GAMMA) * (1 - GAMMA**n) / (1 - GAMMA**2)
        assert history[n] == pytest.approx(closed, abs=1e-10)


def test_value_iteration_records_the_largest_change_of_each_sweep() -> None:
    result = value_iteration(two_state(), GAMMA, tolerance=1e-6)
    np.testing.assert_allclose(
        result.deltas, np.abs(np.diff(result.history, axis=0)).max(axis=1), atol=1e-15
    )
    assert result.deltas[-1] < 1e-6 <= result.deltas[-2]
    assert result.history.shape == (result.num_sweeps + 1, 2)


def test_policy_values_solves_the_bellman_equation_exactly() -> None:
    # two-state: (I - 0.9 P) V = R with P the swap
    np.testing.assert_allclose(
        policy_values(two_state(), np.array([0, 0]), GAMMA), [2.8 / 0.19, 2.9 / 0.19]
    )
    # chain 0 -> 1 -> 2 (terminal), reward 1 on the last step: V = [gamma, 1, 0], also at gamma 1
    chain = TabularMDP.from_spec({0: {0: [(1.0, 1, 0.0)]}, 1: {0: [(1.0, 2, 1.0)]}})
    np.testing.assert_allclose(policy_values(chain, np.zeros(3, int), GAMMA), [0.9, 1.0, 0.0])
    np.testing.assert_allclose(policy_values(chain, np.zeros(3, int), 1.0), [1.0, 1.0, 0.0])


def test_value_and_policy_iteration_on_a_choice_by_hand() -> None:
    # state 0: action 0 ends at once with reward 1; action 1 goes to state 1, which ends with 3.
    # gamma 0.5: waiting is worth 1.5 > 1; gamma 0.2: 0.6 < 1.
    spec = {
        0: {0: [(1.0, 2, 1.0)], 1: [(1.0, 1, 0.0)]},
        1: {0: [(1.0, 2, 3.0)], 1: [(1.0, 2, 3.0)]},
    }
    mdp = TabularMDP.from_spec(spec)
    for gamma, action, value in [(0.5, 1, 1.5), (0.2, 0, 1.0)]:
        for result in (value_iteration(mdp, gamma), policy_iteration(mdp, gamma)):
            assert result.policy[0] == action
            np.testing.assert_allclose(result.values, [value, 3.0, 0.0])
            np.testing.assert_allclose(result.q_values[2], [0.0, 0.0])  # terminal


@pytest.mark.parametrize("slippery", [True, False])
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_frozenlake_value_iteration_policy_iteration_and_linear_solve_agree(
    slippery: bool, gamma: float
) -> None:
    mdp = TabularMDP.from_env(gym.make("FrozenLake-v1", is_slippery=slippery))
    vi = value_iteration(mdp, gamma, tolerance=1e-12)
    pi = policy_iteration(mdp, gamma)
    exact = policy_values(mdp, pi.policy, gamma)
    np.testing.assert_allclose(vi.values, pi.values, atol=1e-9)
    np.testing.assert_allclose(pi.values, exact, atol=1e-12)
    np.testing.assert_allclose(policy_values(mdp, vi.policy, gamma), exact, atol=1e-9)
    # both policies are greedy in the optimal Q: their actions score the state's best value
    q = q_from_values(mdp, exact, gamma)
    rows = np.arange(16)
    np.testing.assert_allclose(q[rows, vi.policy], q.max(axis=1), atol=1e-9)
    np.testing.assert_allclose(q[rows, pi.policy], q.max(axis=1), atol=1e-9)
    assert exact[mdp.terminal].tolist() == [0.0] * 5
    if not slippery:
        # six steps to the goal: the start is worth gamma^5
        assert exact[0] == pytest.approx(gamma**5)


def test_frozenlake_slippery_gamma_1_is_the_probability_of_reaching_the_goal() -> None:
    # every policy of the slippery lake ends (in a hole or the goal), so gamma = 1 is fine
    mdp = TabularMDP.from_env(gym.make("FrozenLake-v1"))
    vi = value_iteration(mdp, 1.0, tolerance=1e-12, max_sweeps=100_000)
    pi = policy_iteration(mdp, 1.0)
    np.testing.assert_allclose(vi.values, pi.values, atol=1e-8)
    assert pi.values[0] == pytest.approx(14 / 17)  # the known optimum of the 4x4 lake


def test_taxi_value_and_policy_iteration_agree() -> None:
    mdp = TabularMDP.from_env(gym.make("Taxi-v4"))
    vi = value_iteration(mdp, 0.99, tolerance=1e-10)
    pi = policy_iteration(mdp, 0.99)
    np.testing.assert_allclose(vi.values, pi.values, atol=1e-7)


def test_policy_iteration_history_improves_monotonically() -> None:
    mdp = TabularMDP.from_env(gym.make("FrozenLake-v1"))
    pi = policy_iteration(mdp, 0.99)
    assert pi.num_iterations == len(pi.value_history) == len(pi.policy_history) > 1
    assert np.all(np.diff(pi.value_history, axis=0) >= -1e-12)
    np.testing.assert_array_equal(pi.policy_history[0], np.zeros(16))
    np.testing.assert_array_equal(pi.policy_history[-1], pi.policy)


def test_gamma_1_on_a_never_ending_mdp_stops_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"did not converge in max_sweeps = 500.*gamma = 1"):
        value_iteration(two_state(), 1.0, max_sweeps=500)
    with pytest.raises(ConfigError, match=r"gamma = 1 the policy never reaches a terminal"):
        policy_iteration(two_state(), 1.0)
    # the non-slippery lake: always-left never leaves the start
    lake = TabularMDP.from_env(gym.make("FrozenLake-v1", is_slippery=False))
    with pytest.raises(ConfigError, match=r"from states \[0, "):
        policy_values(lake, np.zeros(16, dtype=int), 1.0)


def test_too_few_sweeps_with_gamma_below_1_says_what_to_raise() -> None:
    with pytest.raises(ConfigError, match="raise max_sweeps or tolerance"):
        value_iteration(two_state(), GAMMA, max_sweeps=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.1}, "gamma"),
        ({"gamma": 0.9, "tolerance": 0.0}, "tolerance"),
        ({"gamma": 0.9, "max_sweeps": 0}, "max_sweeps"),
        ({"gamma": 0.9, "initial_values": np.zeros(3)}, "initial_values"),
    ],
)
def test_value_iteration_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        value_iteration(two_state(), **kwargs)


def test_policy_values_refuses_a_malformed_policy() -> None:
    with pytest.raises(ConfigError, match="policy"):
        policy_values(two_state(), np.array([0, 1]), GAMMA)  # action 1 does not exist
