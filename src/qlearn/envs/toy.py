"""Toy MDPs small enough to solve exactly, so a learner's Q-values can be checked against Q*.

`ChainEnv` is a corridor with a terminal cell at each end. It publishes its model the way
Gymnasium's toy-text envs do (`env.unwrapped.P[s][a]`, a list of `(prob, next_state, reward,
done)`) and steps by sampling that same table, so `qlearn.planning.TabularMDP.from_env(env)`
is its exact model and `value_iteration` gives its exact Q*.

    env = make_env("qlearn/Chain-v0")   # 7 cells, a 50-step time limit
    q_star = value_iteration(TabularMDP.from_env(env), gamma=0.9).q_values
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from qlearn.config import check_range
from qlearn.errors import ConfigError, EnvError

LEFT, RIGHT = 0, 1
CHAIN_ID = "qlearn/Chain-v0"
CHAIN_MAX_EPISODE_STEPS = 50

# (probability, next_state, reward, done), Gymnasium's toy-text convention.
Transition = tuple[float, int, float, bool]


class ChainEnv(gym.Env[int, int]):
    """A corridor of cells 0..num_states-1; the two end cells are terminal.

    Episodes start in `start_state`, or by default in a uniformly drawn inner cell
    (1..num_states-2) so that every state is visited without any exploration. Action 0 moves
    left, action 1 right; with probability `slip` the move goes the other way. Entering cell 0
    pays `left_reward`, entering the last cell pays `right_reward`, and either ends the episode;
    every other step pays 0.

    With `slip = 0`, `left_reward = 0` and gamma < 1, Q*(s, right) = gamma^(n - 2 - s) *
    right_reward for inner cells s of a chain of n cells: the reward lies n - 1 - s steps away.

    The env itself never truncates; `make_env("qlearn/Chain-v0")` adds a time limit of 50 steps.
    Observations carry no clock, so a learner that bootstraps at truncation (as `qlearn.train`
    does) still targets the Q* of the untimed MDP that `TabularMDP.from_env` returns.

    Args:
        num_states: cells, the two terminal ends included; >= 3.
        left_reward: paid on entering cell 0.
        right_reward: paid on entering cell num_states - 1.
        slip: probability in [0, 1) that the agent moves opposite to its action.
        start_state: the inner cell every episode starts in; None draws one uniformly.
        render_mode: unsupported; must be None.
    """

    def __init__(
        self,
        num_states: int = 7,
        *,
        left_reward: float = 0.0,
        right_reward: float = 1.0,
        slip: float = 0.0,
        start_state: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_states, int) or isinstance(num_states, bool):
            raise ConfigError(f"num_states = {num_states!r} is invalid; allowed: an integer >= 3")
        check_range("num_states", num_states, 3)
        check_range("left_reward", float(left_reward))
        check_range("right_reward", float(right_reward))
        check_range("slip", float(slip), 0, 1, high_open=True)
        if start_state is not None and (
            not isinstance(start_state, int) or not 1 <= start_state <= num_states - 2
        ):
            raise ConfigError(
                f"start_state = {start_state!r} is invalid; allowed: None (a uniformly drawn "
                f"inner cell) or an inner cell in [1, {num_states - 2}]"
            )
        if render_mode is not None:
            raise EnvError(f"render_mode = {render_mode!r}; allowed: None (ChainEnv draws nothing)")
        self.num_states = num_states
        self.observation_space = gym.spaces.Discrete(num_states)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode
        self.P: dict[int, dict[int, list[Transition]]] = self._table(
            float(left_reward), float(right_reward), float(slip)
        )
        self.start_state = start_state
        self.state = 1

    def _table(
        self, left_reward: float, right_reward: float, slip: float
    ) -> dict[int, dict[int, list[Transition]]]:
        last = self.num_states - 1
        table: dict[int, dict[int, list[Transition]]] = {}
        for s in range(self.num_states):
            if s in (0, last):  # terminal: an inert self-loop, as in FrozenLake's holes
                table[s] = {a: [(1.0, s, 0.0, True)] for a in (LEFT, RIGHT)}
                continue
            row: dict[int, list[Transition]] = {}
            for a in (LEFT, RIGHT):
                intended = s - 1 if a == LEFT else s + 1
                outcomes = [(1.0 - slip, intended)]
                if slip > 0:
                    outcomes.append((slip, 2 * s - intended))  # the opposite neighbour
                row[a] = [
                    (
                        p,
                        s2,
                        left_reward if s2 == 0 else right_reward if s2 == last else 0.0,
                        s2 in (0, last),
                    )
                    for p, s2 in outcomes
                ]
            table[s] = row
        return table

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        if self.start_state is None:
            self.state = int(self.np_random.integers(1, self.num_states - 1))
        else:
            self.state = self.start_state
        return self.state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        outcomes = self.P[self.state][int(action)]
        k = 0
        if len(outcomes) > 1:
            k = int(self.np_random.choice(len(outcomes), p=[p for p, *_ in outcomes]))
        _, self.state, reward, terminated = outcomes[k]
        return self.state, reward, terminated, False, {}


def register_toy_envs() -> None:
    """Register `qlearn/Chain-v0` with Gymnasium (once); `make_env` calls this on demand."""
    if CHAIN_ID not in gym.registry:
        gym.register(
            id=CHAIN_ID,
            entry_point="qlearn.envs.toy:ChainEnv",
            max_episode_steps=CHAIN_MAX_EPISODE_STEPS,
        )
