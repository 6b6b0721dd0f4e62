"""A finite MDP with a known model: transition probabilities, expected rewards, terminal states.

`TabularMDP` is what the planners in `qlearn.planning.dp` work on. Build one from arrays, from a
Gymnasium toy-text env's transition table (`env.unwrapped.P`), or from a small dict spec.

Terminal states end an episode on entry: their value is 0 and their own rows of `P` and `R` are
never used by the planners (the constructors give them a reward-free self-loop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qlearn.errors import ConfigError, EnvError

# How far a row of P may sum from 1; the slippery FrozenLake's thirds sum to 1 within ~1e-16.
PROB_ATOL = 1e-8

# {state: {action: [(probability, next_state, reward), ...]}}
MDPSpec = Mapping[int, Mapping[int, Sequence[tuple[float, int, float]]]]


@dataclasses.dataclass(frozen=True, eq=False)
class TabularMDP:
    """Transition probabilities, expected rewards and terminal states of a finite MDP.

    Build with `from_arrays`, `from_env` or `from_spec`, which check the arrays; the fields are
    read-only numpy arrays.

    Attributes:
        P: (num_states, num_actions, num_states) probability of s' after taking a in s.
        R: (num_states, num_actions) expected reward of taking a in s.
        terminal: (num_states,) bool, True where entering the state ends the episode.
    """

    P: np.ndarray
    R: np.ndarray
    terminal: np.ndarray

    @property
    def num_states(self) -> int:
        return int(self.P.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.P.shape[1])

    @classmethod
    def from_arrays(
        cls,
        P: np.ndarray,
        R: np.ndarray,
        terminal: np.ndarray | Iterable[bool] | None = None,
    ) -> TabularMDP:
        """Check and copy the arrays.

        Args:
            P: (S, A, S) non-negative, each P[s, a] summing to 1.
            R: (S, A) finite expected rewards.
            terminal: (S,) bool mask; None means no terminal states.

        Raises:
            ConfigError: naming the first shape or value that is wrong.
        """
        P = np.array(P, dtype=np.float64)
        R = np.array(R, dtype=np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] == 0 or P.shape[1] == 0:
            raise ConfigError(
                f"P has shape {P.shape}; allowed: (num_states, num_actions, num_states), "
                "both at least 1"
            )
        num_states, num_actions = P.shape[:2]
        if R.shape != (num_states, num_actions):
            raise ConfigError(
                f"R has shape {R.shape}; allowed: (num_states, num_actions) = "
                f"{(num_states, num_actions)}"
            )
        if not np.all(np.isfinite(P)) or np.any(P < 0):
            raise ConfigError("P has negative or non-finite entries; allowed: probabilities >= 0")
        sums = P.sum(axis=2)
        bad = np.argwhere(np.abs(sums - 1.0) > PROB_ATOL)
        if bad.size:
            s, a = (int(i) for i in bad[0])
            raise ConfigError(
                f"P[{s}, {a}] sums to {sums[s, a]:.6g}; allowed: each P[s, a] sums to 1"
            )
        if not np.all(np.isfinite(R)):
            raise ConfigError("R has non-finite entries; allowed: finite rewards")
        if terminal is None:
            mask = np.zeros(num_states, dtype=bool)
        else:
            mask = np.array(terminal)
            if mask.shape != (num_states,) or not (
                mask.dtype == bool or np.isin(mask, (0, 1)).all()
            ):
                raise ConfigError(
                    f"terminal has shape {mask.shape} and dtype {mask.dtype}; "
                    f"allowed: a ({num_states},) bool mask"
                )
            mask = mask.astype(bool)
        for array in (P, R, mask):
            array.flags.writeable = False
        return cls(P=P, R=R, terminal=mask)

    @classmethod
    def from_env(cls, env: Any) -> TabularMDP:
        """Read the model of a Gymnasium toy-text env (FrozenLake, Taxi, CliffWalking).

        These envs expose `env.unwrapped.P[s][a]`, a list of `(prob, next_state, reward, done)`.
        A state is terminal when some transition into it ends the episode; the same next state
        listed twice for one (s, a), as in slippery FrozenLake's corners, adds up.

        Raises:
            EnvError: the env has no such table, or its spaces are not Discrete.
        """
        from qlearn.envs import check_discrete_env

        name = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
        num_states, num_actions = check_discrete_env(env, name=f"env {name!r}")
        table = getattr(env.unwrapped, "P", None)
        if not isinstance(table, Mapping):
            raise EnvError(
                f"env {name!r} has no known model (env.unwrapped.P); allowed: toy-text envs "
                "such as FrozenLake-v1, Taxi-v4, CliffWalking-v1"
            )
        P = np.zeros((num_states, num_actions, num_states))
        R = np.zeros((num_states, num_actions))
        terminal = np.zeros(num_states, dtype=bool)
        for s in range(num_states):
            for a in range(num_actions):
                for prob, next_state, reward, done in table[s][a]:
                    P[s, a, next_state] += prob
                    R[s, a] += prob * reward
                    if done:
                        terminal[next_state] = True
        _self_loop(P, R, terminal)
        return cls.from_arrays(P, R, terminal)

    @classmethod
    def from_spec(
        cls,
        spec: MDPSpec,
        *,
        num_states: int | None = None,
        terminal: Iterable[int] = (),
    ) -> TabularMDP:
        """Build from `{state: {action: [(probability, next_state, reward), ...]}}`.

        States and actions are integers from 0. Every state listed must list the same actions
        0..A-1. A state that is never a key (only a next state), or is named in `terminal`, is
        terminal. The same next state listed twice for one (s, a) adds up its probabilities.

        Example, the two-state loop (state 0 -> 1 with reward 1, 1 -> 0 with reward 2):
            `TabularMDP.from_spec({0: {0: [(1.0, 1, 1.0)]}, 1: {0: [(1.0, 0, 2.0)]}})`

        Args:
            spec: the transitions of each non-terminal state.
            num_states: the state count, when it exceeds the largest state mentioned + 1.
            terminal: states to mark terminal even though the spec lists their actions.

        Raises:
            ConfigError: a malformed entry, missing action, or a probability sum other than 1.
        """
        if not spec:
            raise ConfigError("the MDP spec is empty; allowed: {state: {action: [(p, s2, r)]}}")
        mentioned = set(spec)
        actions = None
        for s, row in spec.items():
            if not isinstance(s, int) or s < 0:
                raise ConfigError(f"state {s!r} in the MDP spec; allowed: integers >= 0")
            keys = sorted(row)
            if any(not isinstance(a, int) for a in keys) or keys != list(range(len(keys))):
                raise ConfigError(
                    f"state {s} lists actions {keys}; allowed: every action 0..A-1, A >= 1"
                )
            if actions is None:
                actions = len(keys)
            elif len(keys) != actions:
                raise ConfigError(
                    f"state {s} lists {len(keys)} actions, an earlier state {actions}; "
                    "allowed: the same actions in every listed state"
                )
            for a, outcomes in row.items():
                for outcome in outcomes:
                    if len(outcome) != 3 or not isinstance(outcome[1], int) or outcome[1] < 0:
                        raise ConfigError(
                            f"spec[{s}][{a}] has entry {outcome!r}; allowed: "
                            "(probability, next_state >= 0, reward)"
                        )
                    mentioned.add(outcome[1])
        assert actions is not None
        terminal = set(terminal)
        size = max(mentioned | terminal | {-1}) + 1
        if num_states is not None:
            if num_states < size:
                raise ConfigError(
                    f"num_states = {num_states} is too small; allowed: >= {size} "
                    "(the largest state mentioned + 1)"
                )
            size = num_states
        P = np.zeros((size, actions, size))
        R = np.zeros((size, actions))
        mask = np.ones(size, dtype=bool)
        for s, row in spec.items():
            mask[s] = s in terminal
            for a, outcomes in row.items():
                for prob, next_state, reward in outcomes:
                    P[s, a, next_state] += prob
                    R[s, a] += prob * reward
        _self_loop(P, R, mask)
        return cls.from_arrays(P, R, mask)


def _self_loop(P: np.ndarray, R: np.ndarray, terminal: np.ndarray) -> None:
    """Give terminal states a reward-free self-loop, so their rows are valid but inert."""
    for s in np.flatnonzero(terminal):
        P[s] = 0.0
        P[s, :, s] = 1.0
        R[s] = 0.0
