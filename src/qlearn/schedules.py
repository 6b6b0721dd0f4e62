"""What changes with the env step: exploration, the PER exponent, and whether an interval is due.

Pure functions of (config, step). `step` counts real transitions summed over the vector env's
copies, and the schedules run over the run's planned `config.total_steps`, so splitting a run
into several `learn(n)` calls, or changing `num_envs`, changes none of them.
"""

from __future__ import annotations

from qlearn.config import DQNConfig
from qlearn.exploration import linear_schedule


def epsilon(config: DQNConfig, step: int) -> float:
    """Probability of a uniform random action at env step `step` (steps taken before it).

    1 before `learning_starts` whatever the variant: the warm-up fills the replay with a
    uniform random policy, as in Stable-Baselines3. After it, the line from `epsilon_start` at
    step 0 to `epsilon_end` at `exploration_fraction * total_steps`, then `epsilon_end`; or 0
    under noisy nets and softmax exploration, which explore by themselves.
    """
    c = config
    if step < c.learning_starts:
        return 1.0
    if c.noisy or c.exploration == "softmax":
        return 0.0
    return linear_schedule(
        c.epsilon_start, c.epsilon_end, c.exploration_fraction * c.total_steps, step
    )


def per_beta(config: DQNConfig, step: int) -> float:
    """Importance-weight exponent of prioritized replay, annealed linearly from
    `per_beta_start` at step 0 to 1 at the run's planned `total_steps`."""
    return linear_schedule(config.per_beta_start, 1.0, config.total_steps, step)


def num_crossings(before: int, after: int, interval: int) -> int:
    """How many multiples of `interval` lie in (before, after]: how often an event every
    `interval` steps falls due when the step counter jumps from `before` to `after`.

    With many envs the counter moves several steps at once, so `after % interval == 0` would
    miss the multiples it jumps over.
    """
    return after // interval - before // interval
