"""Tabular Q-learning: a Q-table, the Bellman update, exploration schedules, greedy evaluation.

Reads top to bottom like the algorithm: for each episode pick epsilon from its schedule, then at
each step choose an action (epsilon-greedy or softmax), step the env and apply

    Q(s, a) <- (1 - alpha) Q(s, a) + alpha (r + gamma max_a' Q(s', a')),

where a terminated transition does not bootstrap (the episode has no future) and a truncated one
does (the time limit cut it short; s' still has a future).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from qlearn.config import TabularConfig, check_range
from qlearn.envs import check_discrete_env, make_env
from qlearn.errors import ConfigError, EnvError, QlearnError
from qlearn.evaluation import EvalResult, goal_of, run_episodes
from qlearn.exploration import (
    epsilon_greedy,
    exponential_schedule,
    linear_schedule,
    softmax_action,
)


def q_update(
    q_sa: float,
    reward: float,
    next_max_q: float,
    terminated: bool,
    alpha: float,
    gamma: float,
) -> float:
    """One Q-learning step: (1 - alpha) Q(s, a) + alpha (r + gamma max_a' Q(s', a')).

    Args:
        q_sa: the current Q(s, a).
        reward: r of the transition.
        next_max_q: max_a' Q(s', a') of the next state.
        terminated: True if s' ended the episode; then the target is r alone. A truncated
            transition is not terminated and bootstraps as usual.
        alpha: learning rate in (0, 1].
        gamma: discount in [0, 1].

    Returns:
        The new Q(s, a).
    """
    target = reward if terminated else reward + gamma * next_max_q
    return (1.0 - alpha) * q_sa + alpha * target


@dataclasses.dataclass(frozen=True)
class EpisodeMetrics:
    """One training episode, as passed to `learn`'s callback."""

    episode: int
    """Index over the agent's life, from 0."""
    episode_return: float
    """Undiscounted sum of rewards."""
    length: int
    """Steps taken."""
    epsilon: float
    """The episode's epsilon; nan under softmax exploration."""


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingMetrics:
    """Per-episode metrics of one `learn` call, each (num_episodes,)."""

    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    epsilons: np.ndarray
    successes: np.ndarray | None = None
    """(num_episodes,) bool, whether each episode reached the env's goal (see
    `qlearn.evaluation.GOALS`); None for an env without one."""

    @property
    def success_rate(self) -> float | None:
        """Fraction of episodes that reached the goal; None for an env without one."""
        return None if self.successes is None else float(np.mean(self.successes))


def make_tabular_env(
    env_id: str, *, max_episode_steps: int | None = None, **kwargs: Any
) -> gym.Env:
    """`make_env`, checked for Discrete spaces, with env-constructor errors made EnvErrors.

    Args:
        env_id: a registered Gymnasium id, e.g. "FrozenLake-v1".
        max_episode_steps: truncation limit; None keeps the env's own.
        **kwargs: passed to the env, e.g. `is_slippery=False` or `map_name="8x8"`.

    Raises:
        EnvError: an unknown id, arguments the env refuses, or non-Discrete spaces.
    """
    # Gymnasium warns before it refuses a deprecated id; hold its warnings back until the env
    # exists, so a refused id gives one error and nothing else.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = make_env(env_id, max_episode_steps=max_episode_steps, **kwargs)
        except QlearnError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            # Env constructors reject unknown or bad keyword arguments with these.
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            given = f" with {shown}" if shown else ""
            raise EnvError(
                f"cannot make env {env_id!r}{given}: {type(exc).__name__}: {exc}"
            ) from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    check_discrete_env(env, name=f"env {env_id!r}")
    return env


def evaluate_policy(
    env: gym.Env,
    policy: np.ndarray,
    *,
    num_episodes: int = 1_000,
    seed: int = 0,
) -> EvalResult:
    """Run a deterministic tabular policy for `num_episodes` episodes.

    Args:
        env: an env with Discrete observations; it is reset with `seed` first.
        policy: (num_states,) int action of each state.
        num_episodes: >= 1.
        seed: seeds the env's first reset, so the same seed replays the same episodes.

    Raises:
        ConfigError: num_episodes out of range or a policy that does not fit the env.
    """
    check_range("num_episodes", num_episodes, 1)
    num_states, num_actions = check_discrete_env(env)
    policy = np.asarray(policy)
    if policy.shape != (num_states,) or policy.min() < 0 or policy.max() >= num_actions:
        raise ConfigError(
            f"policy has shape {policy.shape}; allowed: ({num_states},) actions in "
            f"[0, {num_actions - 1}]"
        )
    actions = policy.tolist()  # Python ints: faster to index and what env.step expects
    return run_episodes(env, actions.__getitem__, num_episodes, seed)


class TabularQAgent:
    """Q-learning with a table of shape (num_states, num_actions), starting at zero.

    Example::

        agent = TabularQAgent("FrozenLake-v1", TabularConfig(num_episodes=5_000))
        metrics = agent.learn()
        agent.evaluate(num_episodes=1_000).success_rate

    Randomness comes from `config.seed` alone: it seeds the env's first reset and the numpy
    Generator that explores, so the same seed gives the same Q-table.

    Args:
        env: a Gymnasium id (made with `make_tabular_env`) or an env instance.
        config: hyperparameters; `TabularConfig()` by default.
        **env_kwargs: passed to the env when `env` is an id, e.g. `is_slippery=False`.

    Raises:
        EnvError: the env cannot be made or its spaces are not both Discrete.
        ConfigError: env_kwargs given with an env instance.
    """

    def __init__(
        self,
        env: str | gym.Env,
        config: TabularConfig | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.config = config if config is not None else TabularConfig()
        limit = self.config.max_episode_steps
        if isinstance(env, str):
            self._make_env: Callable[[], gym.Env] | None = lambda: make_tabular_env(
                env, max_episode_steps=limit, **env_kwargs
            )
            self.env = self._make_env()
        else:
            if env_kwargs:
                raise ConfigError(
                    f"env keyword arguments {sorted(env_kwargs)} need an env id; allowed: none "
                    "with an env instance"
                )
            self._make_env = None
            self.env = gym.wrappers.TimeLimit(env, limit) if limit is not None else env
        self.num_states, self.num_actions = check_discrete_env(self.env)
        self.q_table = np.zeros((self.num_states, self.num_actions))
        """(num_states, num_actions) the learned Q-values."""
        self.rng = np.random.default_rng(self.config.seed)
        self.num_episodes_done = 0

    def epsilon(self, episode: int) -> float:
        """Epsilon of the given episode under the config's schedule."""
        cfg = self.config
        if cfg.epsilon_decay == "linear":
            duration = cfg.exploration_fraction * cfg.num_episodes
            return linear_schedule(cfg.epsilon_start, cfg.epsilon_end, duration, episode)
        return exponential_schedule(
            cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_rate, episode
        )

    def learn(
        self,
        num_episodes: int | None = None,
        callback: Callable[[EpisodeMetrics], None] | None = None,
    ) -> TrainingMetrics:
        """Train for `num_episodes` episodes (config.num_episodes by default).

        A second call continues where the first stopped, schedule included.

        Args:
            num_episodes: >= 1, or None for `config.num_episodes`.
            callback: called after each episode, e.g. to advance a progress bar.

        Returns:
            The per-episode returns, lengths and epsilons of this call.
        """
        cfg = self.config
        n = cfg.num_episodes if num_episodes is None else num_episodes
        check_range("num_episodes", n, 1)
        env, q, rng = self.env, self.q_table, self.rng
        alpha, gamma = cfg.alpha, cfg.gamma
        softmax = cfg.exploration == "softmax"
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        epsilons = np.zeros(n)
        goal = goal_of(env)
        successes = np.zeros(n, dtype=bool)
        for i in range(n):
            episode = self.num_episodes_done
            eps = float("nan") if softmax else self.epsilon(episode)
            state, _ = env.reset(seed=cfg.seed if episode == 0 else None)
            total, steps, done = 0.0, 0, False
            while not done:
                if softmax:
                    action = softmax_action(q[state], cfg.temperature, rng)
                else:
                    action = epsilon_greedy(q[state], eps, rng)
                next_state, reward, terminated, truncated, _ = env.step(action)
                q[state, action] = q_update(
                    q[state, action], reward, q[next_state].max(), terminated, alpha, gamma
                )
                state = next_state
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns[i], lengths[i], epsilons[i] = total, steps, eps
            if goal is not None:
                successes[i] = goal.reached(env.unwrapped, bool(terminated))
            self.num_episodes_done += 1
            if callback is not None:
                callback(EpisodeMetrics(episode, total, steps, eps))
        return TrainingMetrics(returns, lengths, epsilons, successes if goal else None)

    def greedy_policy(self) -> np.ndarray:
        """(num_states,) the argmax action of each state, ties to the lowest action."""
        return self.q_table.argmax(axis=1)

    def act(self, state: int) -> int:
        """The greedy action in `state`, for deployment."""
        return int(self.q_table[state].argmax())

    def evaluate(self, num_episodes: int = 1_000, seed: int | None = None) -> EvalResult:
        """Run the greedy policy for `num_episodes` episodes.

        Uses a fresh env when the agent was made from an id, so evaluating leaves training's
        env untouched; an env instance is reused (and reseeded).

        Args:
            num_episodes: >= 1.
            seed: seeds the evaluation episodes; `config.seed + 1` by default, a stream apart
                from training's.
        """
        env = self._make_env() if self._make_env is not None else self.env
        try:
            return evaluate_policy(
                env,
                self.greedy_policy(),
                num_episodes=num_episodes,
                seed=self.config.seed + 1 if seed is None else seed,
            )
        finally:
            if env is not self.env:
                env.close()
