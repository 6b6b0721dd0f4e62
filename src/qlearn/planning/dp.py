"""Dynamic programming on a known `TabularMDP`: value iteration, policy iteration, exact evaluation.

Terminal states have value 0, so `Q(s, a) = R(s, a) + gamma * sum_s' P(s, a, s') V(s')` needs no
`done` flag. With gamma = 1 the values of a policy that never reaches a terminal state are
infinite or undefined: value iteration then stops after `max_sweeps` and policy iteration as soon
as it meets such a policy, both with a ConfigError that says so (never a hang, never a silent
non-converged result).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qlearn.config import check_range
from qlearn.errors import ConfigError
from qlearn.planning.mdp import TabularMDP

# Policy improvement keeps the current action unless another is better by more than this, so
# ties between equally good actions cannot make policy iteration cycle.
IMPROVEMENT_ATOL = 1e-10


@dataclasses.dataclass(frozen=True, eq=False)
class ValueIterationResult:
    """What value iteration found.

    Attributes:
        values: (S,) V after the last sweep.
        q_values: (S, A) the one-step lookahead of `values`; zero in terminal states.
        policy: (S,) int, greedy in `q_values` (ties to the lowest action).
        num_sweeps: synchronous sweeps run.
        history: (num_sweeps + 1, S); `history[n]` is V after n sweeps, `history[0]` the start.
        deltas: (num_sweeps,) max |V_n - V_{n-1}| of each sweep.
    """

    values: np.ndarray
    q_values: np.ndarray
    policy: np.ndarray
    num_sweeps: int
    history: np.ndarray
    deltas: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class PolicyIterationResult:
    """What policy iteration found.

    Attributes:
        values: (S,) exact values of the final policy.
        q_values: (S, A) the one-step lookahead of `values`; zero in terminal states.
        policy: (S,) int, the stable policy.
        num_iterations: policies evaluated, the first and the stable one included.
        value_history: (num_iterations, S) the exact values of each policy in turn.
        policy_history: (num_iterations, S) each policy in turn.
    """

    values: np.ndarray
    q_values: np.ndarray
    policy: np.ndarray
    num_iterations: int
    value_history: np.ndarray
    policy_history: np.ndarray


def q_from_values(mdp: TabularMDP, values: np.ndarray, gamma: float) -> np.ndarray:
    """One-step lookahead: (S,) values -> (S, A) Q-values, zero in terminal states."""
    v = np.where(mdp.terminal, 0.0, values)
    q = mdp.R + gamma * (mdp.P @ v)  # (S, A, S) @ (S,) -> (S, A)
    q[mdp.terminal] = 0.0
    return q


def greedy_policy(q_values: np.ndarray) -> np.ndarray:
    """(S, A) Q-values -> (S,) int64 argmax actions, ties to the lowest action."""
    return np.asarray(q_values).argmax(axis=1).astype(np.int64)


def value_iteration(
    mdp: TabularMDP,
    gamma: float,
    *,
    tolerance: float = 1e-8,
    max_sweeps: int = 10_000,
    initial_values: np.ndarray | None = None,
) -> ValueIterationResult:
    """Synchronous value iteration, V_{n+1}(s) = max_a [R(s, a) + gamma sum_s' P V_n(s')].

    Stops after the first sweep whose largest change is below `tolerance`.

    Args:
        mdp: the model.
        gamma: discount in [0, 1].
        tolerance: > 0, on max_s |V_{n+1}(s) - V_n(s)|.
        max_sweeps: >= 1, the most sweeps before giving up.
        initial_values: (S,) V_0; zeros by default.

    Raises:
        ConfigError: out-of-range arguments, or no convergence within `max_sweeps` (with
            gamma = 1, typically because some policy never terminates and its values grow
            without bound).
    """
    check_range("gamma", gamma, 0, 1)
    check_range("tolerance", tolerance, 0, None, low_open=True)
    check_range("max_sweeps", max_sweeps, 1)
    v = np.zeros(mdp.num_states) if initial_values is None else np.array(initial_values, float)
    if v.shape != (mdp.num_states,):
        raise ConfigError(
            f"initial_values has shape {v.shape}; allowed: ({mdp.num_states},), one per state"
        )
    v[mdp.terminal] = 0.0
    history = [v]
    deltas = []
    for _ in range(max_sweeps):
        new_v = q_from_values(mdp, v, gamma).max(axis=1)
        delta = float(np.abs(new_v - v).max())
        history.append(new_v)
        deltas.append(delta)
        v = new_v
        if delta < tolerance:
            break
    else:
        hint = (
            "; with gamma = 1 the values of a policy that never reaches a terminal state grow "
            "without bound, so use gamma < 1"
            if gamma == 1
            else "; raise max_sweeps or tolerance"
        )
        raise ConfigError(
            f"value iteration did not converge in max_sweeps = {max_sweeps} sweeps (last change "
            f"{deltas[-1]:.3g}, tolerance {tolerance:g}){hint}"
        )
    q = q_from_values(mdp, v, gamma)
    return ValueIterationResult(
        values=v,
        q_values=q,
        policy=greedy_policy(q),
        num_sweeps=len(deltas),
        history=np.array(history),
        deltas=np.array(deltas),
    )


def policy_values(mdp: TabularMDP, policy: np.ndarray, gamma: float) -> np.ndarray:
    """Exact values of a deterministic policy: solve (I - gamma P_pi) V = R_pi.

    Terminal states are fixed at 0, so the system is solved over the non-terminal states only.

    Args:
        mdp: the model.
        policy: (S,) int actions.
        gamma: discount in [0, 1].

    Returns:
        (S,) V_pi.

    Raises:
        ConfigError: a malformed policy, or gamma = 1 with a policy that cannot reach a terminal
            state from some state (the system is singular: its values are infinite or undefined).
    """
    check_range("gamma", gamma, 0, 1)
    pi = np.asarray(policy)
    if (
        pi.shape != (mdp.num_states,)
        or not np.issubdtype(pi.dtype, np.integer)
        or pi.min() < 0
        or pi.max() >= mdp.num_actions
    ):
        raise ConfigError(
            f"policy has shape {pi.shape} and dtype {pi.dtype}; allowed: ({mdp.num_states},) "
            f"integer actions in [0, {mdp.num_actions - 1}]"
        )
    states = np.arange(mdp.num_states)
    p_pi = mdp.P[states, pi]  # (S, S)
    r_pi = mdp.R[states, pi]  # (S,)
    live = ~mdp.terminal
    if gamma == 1:
        stuck = _never_terminating(p_pi, mdp.terminal)
        if stuck.size:
            raise ConfigError(
                f"with gamma = 1 the policy never reaches a terminal state from states "
                f"{stuck[:10].tolist()}{'...' if stuck.size > 10 else ''}, so its values are "
                "infinite or undefined; allowed: gamma < 1, or an MDP whose every policy ends"
            )
    a = np.eye(int(live.sum())) - gamma * p_pi[np.ix_(live, live)]
    v = np.zeros(mdp.num_states)
    v[live] = np.linalg.solve(a, r_pi[live])
    return v


def _never_terminating(p_pi: np.ndarray, terminal: np.ndarray) -> np.ndarray:
    """States from which no path under P_pi reaches a terminal state."""
    reach = terminal.copy()
    edges = p_pi > 0
    while True:
        grown = reach | (edges & reach).any(axis=1)
        if (grown == reach).all():
            return np.flatnonzero(~reach)
        reach = grown


def policy_iteration(
    mdp: TabularMDP,
    gamma: float,
    *,
    max_iterations: int = 1_000,
    initial_policy: np.ndarray | None = None,
) -> PolicyIterationResult:
    """Howard's policy iteration: exact evaluation, then greedy improvement, until stable.

    Improvement keeps the current action unless another is better by more than 1e-10, so the
    loop ends on a stable policy even where actions tie.

    Args:
        mdp: the model.
        gamma: discount in [0, 1].
        max_iterations: >= 1, the most policies to evaluate.
        initial_policy: (S,) int actions; action 0 everywhere by default.

    Raises:
        ConfigError: out-of-range arguments, no stable policy within `max_iterations`, or (with
            gamma = 1) a policy met on the way that never terminates; see `policy_values`.
    """
    check_range("gamma", gamma, 0, 1)
    check_range("max_iterations", max_iterations, 1)
    pi = (
        np.zeros(mdp.num_states, dtype=np.int64)
        if initial_policy is None
        else np.asarray(initial_policy)
    )
    values, policies = [], []
    states = np.arange(mdp.num_states)
    for _ in range(max_iterations):
        v = policy_values(mdp, pi, gamma)
        values.append(v)
        policies.append(pi)
        q = q_from_values(mdp, v, gamma)
        best = greedy_policy(q)
        better = q[states, best] > q[states, pi] + IMPROVEMENT_ATOL
        if not better.any():
            return PolicyIterationResult(
                values=v,
                q_values=q,
                policy=pi.astype(np.int64),
                num_iterations=len(values),
                value_history=np.array(values),
                policy_history=np.array(policies),
            )
        pi = np.where(better, best, pi)
    raise ConfigError(
        f"policy iteration found no stable policy in max_iterations = {max_iterations}; "
        "raise max_iterations"
    )
