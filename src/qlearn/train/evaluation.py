"""Greedy evaluation of a policy on its own env."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import numpy as np


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Returns and lengths of evaluation episodes."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def success_rate(self) -> float:
        """Fraction of episodes with a positive return (the goal reward of sparse tasks)."""
        return float(np.mean([r > 0 for r in self.returns]))

    def summary(self) -> dict[str, float]:
        return {
            "mean_return": self.mean,
            "std_return": self.std,
            "min_return": float(min(self.returns)),
            "max_return": float(max(self.returns)),
            "mean_length": float(np.mean(self.lengths)),
            "episodes": float(len(self.returns)),
        }


def evaluate_policy(
    env: gym.Env,
    policy: Callable[[np.ndarray], np.ndarray],
    num_episodes: int,
    seed: int,
    *,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> EvalResult:
    """Run `num_episodes` episodes with a batched greedy `policy` (obs batch -> actions).

    The first reset is seeded with `seed`, so the same seed gives the same episodes.
    `on_frame` receives each `env.render()` frame (for GIFs) when the env renders rgb_array.
    """
    returns, lengths = [], []
    obs, _ = env.reset(seed=seed)
    for _ in range(num_episodes):
        total, length, done = 0.0, 0, False
        if on_frame is not None:
            on_frame(env.render())  # type: ignore[arg-type]
        while not done:
            action = int(policy(np.asarray(obs)[None])[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
            if on_frame is not None:
                on_frame(env.render())  # type: ignore[arg-type]
        returns.append(total)
        lengths.append(length)
        obs, _ = env.reset()
    return EvalResult(tuple(returns), tuple(lengths))
