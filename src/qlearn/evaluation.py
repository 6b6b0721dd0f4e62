"""Evaluation: run a fixed policy for N episodes and summarise the returns.

One function serves every agent: the Q-table's greedy policy, a DQN's `predict`, a planner's
policy. It sits below `agents/` so each of them can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.toy_text import CliffWalkingEnv, FrozenLakeEnv, TaxiEnv

from qlearn.config import check_range
from qlearn.errors import ConfigError

MAX_EPISODE_STEPS = 100_000
"""A cap on evaluation episodes, for envs without a time limit whose policy never ends them."""

# An evaluation's episodes are fixed by the seed of its first reset (later resets continue the
# env's generator). Periodic evaluations choose the model a run keeps as `best`, so scoring that
# model again on their episodes would report a number selected on its own test data. The final
# scores (`DQN.evaluate()`'s default, `qlearn eval`, `qlearn train`'s report, the examples) use
# held-out episodes instead, from a seed no periodic evaluation of the run uses.
HELD_OUT_EVAL_SEED_OFFSET = 1_000_000_000
"""Held-out evaluation of a run seeded `seed` resets with `seed + HELD_OUT_EVAL_SEED_OFFSET`."""
PERIODIC_EVAL_SEED_OFFSET = 1_500_000_000
"""Periodic evaluation k = 0, 1, ... of a run seeded `seed` resets with
`seed + PERIODIC_EVAL_SEED_OFFSET + k`: always above the held-out seed, however many evaluations a
run makes. Both offsets lie above every training reset (`seed + step` for runs under 10^9 steps)
and keep seeds below 2^32, which MinAtar's `RandomState` requires."""


def held_out_eval_seed(seed: int) -> int:
    """The first-reset seed of the final, held-out evaluation of a run seeded `seed`."""
    return seed + HELD_OUT_EVAL_SEED_OFFSET


def periodic_eval_seed(seed: int, index: int) -> int:
    """The first-reset seed of periodic evaluation `index` (0, 1, ...) of a run seeded `seed`."""
    check_range("index", index, 0)
    return seed + PERIODIC_EVAL_SEED_OFFSET + index


@dataclasses.dataclass(frozen=True)
class Goal:
    """What success means in an env whose episodes end at a goal."""

    description: str
    """How a success is recognised, for reports."""
    reached: Callable[[Any, bool], bool]
    """(the unwrapped env after the episode's last step, terminated) -> success."""


def _on_goal_cell(env: FrozenLakeEnv, terminated: bool) -> bool:
    # A hole ends the episode too; only the goal's cell counts (rewards can be rescheduled).
    return terminated and np.asarray(env.desc).flat[int(env.s)] in (b"G", "G")


GOALS: dict[type, Goal] = {
    FrozenLakeEnv: Goal("terminated on the goal cell G, not in a hole", _on_goal_cell),
    # Both terminate only at the goal (CliffWalking's cliff sends the agent back to the start).
    CliffWalkingEnv: Goal("terminated at the goal, not cut off by the time limit", lambda e, t: t),
    TaxiEnv: Goal(
        "terminated by delivering the passenger, not cut off by the time limit", lambda e, t: t
    ),
}
"""Envs that end at a goal, and when an episode succeeded. Elsewhere (CartPole, LunarLander,
Atari, ...) the return is the measure and no success rate is reported. A time limit truncates
an episode, never terminates it, so a truncated episode is never a success."""


def goal_of(env: gym.Env) -> Goal | None:
    """The env's entry in GOALS (matched on the unwrapped env's class), or None."""
    unwrapped = env.unwrapped
    return next((goal for cls, goal in GOALS.items() if isinstance(unwrapped, cls)), None)


@dataclasses.dataclass(frozen=True, eq=False)
class EvalResult:
    """Undiscounted returns and lengths of evaluation episodes, and their successes where the
    env has a goal (see GOALS)."""

    returns: np.ndarray
    """(num_episodes,) the return of each episode."""
    lengths: np.ndarray
    """(num_episodes,) the steps of each episode."""
    successes: np.ndarray | None = None
    """(num_episodes,) bool, whether each episode reached the goal; None without a goal."""
    goal: str | None = None
    """What counts as a success (Goal.description); None without a goal."""

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def std_return(self) -> float:
        return float(self.returns.std())

    @property
    def success_rate(self) -> float | None:
        """Fraction of episodes that reached the goal; None for an env without one."""
        return None if self.successes is None else float(np.mean(self.successes))

    @property
    def mean_length(self) -> float:
        return float(self.lengths.mean())

    def summary(self) -> dict[str, float]:
        """The figures logged to evals.csv; `success_rate` only for an env with a goal, so a
        run's columns are fixed by its env."""
        out = {
            "mean_return": self.mean_return,
            "std_return": self.std_return,
            "min_return": float(self.returns.min()),
            "max_return": float(self.returns.max()),
            "mean_length": self.mean_length,
        }
        if self.success_rate is not None:
            out["success_rate"] = self.success_rate
        out["episodes"] = float(len(self.returns))
        return out


def run_episodes(
    env: gym.Env,
    act: Callable[[Any], int],
    num_episodes: int,
    seed: int,
    *,
    on_frame: Callable[[Any], None] | None = None,
) -> EvalResult:
    """Run `num_episodes` episodes choosing actions with `act(observation) -> int`.

    The first reset is seeded with `seed`, so the same seed replays the same episodes.
    `on_frame` receives each `env.render()` frame (for GIFs) when the env renders rgb_array.
    """
    check_range("num_episodes", num_episodes, 1)
    check_seed(seed)
    goal = goal_of(env)
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    successes = np.zeros(num_episodes, dtype=bool)
    for episode in range(num_episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        if on_frame is not None:
            on_frame(env.render())
        total, steps, done, terminated = 0.0, 0, False, False
        while not done and steps < MAX_EPISODE_STEPS:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated
            if on_frame is not None:
                on_frame(env.render())
        returns[episode], lengths[episode] = total, steps
        if goal is not None:
            successes[episode] = goal.reached(env.unwrapped, bool(terminated))
    if goal is None:
        return EvalResult(returns, lengths)
    return EvalResult(returns, lengths, successes, goal.description)


def check_seed(seed: int, name: str = "seed") -> None:
    """Raise ConfigError unless `seed` is an integer Gymnasium and numpy accept (>= 0)."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ConfigError(f"{name} = {seed!r} is invalid; allowed: an integer >= 0")
    check_range(name, seed, 0)
