"""Exploration: schedules, epsilon-greedy and softmax (Boltzmann) action choice.

All functions take Q-values as numpy arrays and an explicit `numpy.random.Generator`, so a run's
randomness flows from its seed.
"""

from __future__ import annotations

import numpy as np

from qlearn.config import check_range


def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Move linearly from `start` at t=0 to `end` at t=duration, then stay at `end`."""
    if duration <= 0:
        return end
    frac = min(max(t / duration, 0.0), 1.0)
    return start + frac * (end - start)


def exponential_schedule(start: float, end: float, rate: float, t: float) -> float:
    """`start * rate**t`, never below the floor `end`."""
    return max(end, start * rate**t)


def epsilon_greedy(
    q_values: np.ndarray, epsilon: float, rng: np.random.Generator
) -> np.ndarray | int:
    """With probability epsilon a uniform action, else the argmax (ties to the lowest index).

    Args:
        q_values: (num_actions,) or (batch, num_actions).
        epsilon: probability of a random action, in [0, 1].
        rng: the run's generator.

    Returns:
        An int for a single row of Q-values, else (batch,) int64 actions.
    """
    check_range("epsilon", epsilon, 0, 1)
    q = np.asarray(q_values)
    if q.ndim == 1:
        if rng.random() < epsilon:
            return int(rng.integers(q.shape[0]))
        return int(q.argmax())
    greedy = q.argmax(axis=1)
    if epsilon <= 0:
        return greedy
    explore = rng.random(q.shape[0]) < epsilon
    return np.where(explore, rng.integers(q.shape[1], size=q.shape[0]), greedy)


def softmax_probs(q_values: np.ndarray, temperature: float) -> np.ndarray:
    """Boltzmann probabilities exp(Q/T) / sum exp(Q/T), computed stably along the last axis."""
    check_range("temperature", temperature, 0, None, low_open=True)
    z = np.asarray(q_values, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_action(
    q_values: np.ndarray, temperature: float, rng: np.random.Generator
) -> np.ndarray | int:
    """Sample actions from the Boltzmann distribution over Q-values.

    Args:
        q_values: (num_actions,) or (batch, num_actions).
        temperature: > 0; small values approach greedy, large ones uniform.
        rng: the run's generator.
    """
    p = softmax_probs(q_values, temperature)
    if p.ndim == 1:
        return int(np.searchsorted(np.cumsum(p), rng.random() * (1 - 1e-12), side="right"))
    cdf = np.cumsum(p, axis=1)
    u = rng.random((p.shape[0], 1)) * (1 - 1e-12)
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)
