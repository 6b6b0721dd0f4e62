"""Turns one-step transitions, from one env or a vector env, into n-step transitions."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import NamedTuple

import numpy as np

from qlearn.errors import ConfigError, TrainingError


@dataclasses.dataclass
class NStepOut:
    """Finished transitions, stacked; `ReplayMemory.add_transitions(*out.as_add_args())` stores
    them.

    `returns[i]` = Σ_{j<k} γ^j r_{t+j} with k = `steps[i]`, and `next_obs[i]` is the observation
    after the k-th step, so the target is returns + γ^k (1 − terminated) V(next_obs).
    """

    obs: np.ndarray  # (m, *obs_shape)
    actions: np.ndarray  # (m,)
    returns: np.ndarray  # (m,) float32
    next_obs: np.ndarray  # (m, *obs_shape)
    terminated: np.ndarray  # (m,) bool
    steps: np.ndarray  # (m,) int64, in [1, n]

    def __len__(self) -> int:
        return len(self.actions)

    def as_add_args(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(obs, actions, returns, next_obs, terminated, steps): `Storage.add`'s order."""
        return self.obs, self.actions, self.returns, self.next_obs, self.terminated, self.steps


class _Step(NamedTuple):
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray


_Finished = tuple[_Step, float, np.ndarray, bool, int]
"""(first step, discounted return, observation after the last step, terminated, steps)."""


class NStepAccumulator:
    """Per-env sliding windows of the last n one-step transitions.

    For each env, once n transitions are pending the oldest leaves as an n-step transition:
    return Σ_{i<n} γ^i r_i, the next observation of the n-th step, not terminated, steps = n.
    When an episode ends (terminated or truncated) every pending transition of that env leaves at
    once, each with its return cut at the episode's end and steps = the real steps it spans;
    `terminated` is the env's own flag, so a truncated episode bootstraps from its real final
    observation with γ^steps while a terminated one does not bootstrap. With n = 1 transitions
    pass straight through.

    Outputs are ordered by env, then oldest first within an env.
    """

    def __init__(self, n: int, gamma: float, num_envs: int) -> None:
        if not 1 <= n <= 255:  # the replay buffer stores steps as uint8
            raise ConfigError(f"n_step = {n!r} is out of range; allowed: [1, 255]")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"gamma = {gamma!r} is out of range; allowed: [0, 1]")
        if num_envs < 1:
            raise ConfigError(f"num_envs = {num_envs!r} is out of range; allowed: [1, inf)")
        self.n = n
        self.gamma = gamma
        self.num_envs = num_envs
        self._powers = [gamma**i for i in range(n)]  # plain floats: n is small, numpy is slower
        self._pending: list[deque[_Step]] = [deque() for _ in range(num_envs)]

    def _discounted(self, window: deque[_Step]) -> float:
        """Σ_i γ^i r_i over the window, oldest first."""
        return sum(p * step.reward for p, step in zip(self._powers, window, strict=False))

    @property
    def num_pending(self) -> int:
        """Transitions held back, over all envs (at most n − 1 per env between pushes)."""
        return sum(len(d) for d in self._pending)

    def reset(self) -> None:
        """Drop every pending transition.

        Pending windows are not checkpointed. On resume the envs start new episodes, so the
        windows of the interrupted episodes can never be completed; call this to discard them
        (at most n − 1 transitions per env are lost).
        """
        for d in self._pending:
            d.clear()

    def push(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> NStepOut | None:
        """Add one vector-env step; return the transitions it completes, or None.

        Args:
            obs: (num_envs, *obs_shape) observations the actions were taken in.
            actions: (num_envs,) actions.
            rewards: (num_envs,) rewards.
            next_obs: (num_envs, *obs_shape) observations after the step; at an episode's end
                the real final observation (not the reset one).
            terminated: (num_envs,) bool.
            truncated: (num_envs,) bool.
            mask: (num_envs,) bool, True where the env made a real transition. Under Gymnasium's
                next-step autoreset the step after an episode's end only resets the env; mark it
                False and that env's row is ignored entirely. None means all True.

        Returns:
            The finished transitions, or None when none finished.
        """
        num_envs = self.num_envs
        if mask is None:
            mask = np.ones(num_envs, dtype=np.bool_)
        mask = np.asarray(mask, dtype=np.bool_)
        for name, x in (
            ("obs", obs),
            ("actions", actions),
            ("rewards", rewards),
            ("next_obs", next_obs),
            ("terminated", terminated),
            ("truncated", truncated),
            ("mask", mask),
        ):
            if np.ndim(x) == 0 or len(x) != num_envs:
                raise TrainingError(
                    f"{name} has shape {np.shape(x)}; allowed: a leading dimension of "
                    f"num_envs = {num_envs}"
                )
        if not mask.any():
            return None
        terminated = np.asarray(terminated, dtype=np.bool_)
        done = terminated | np.asarray(truncated, dtype=np.bool_)

        if self.n == 1:
            return NStepOut(
                obs=np.asarray(obs)[mask],
                actions=np.asarray(actions)[mask],
                returns=np.asarray(rewards, dtype=np.float32)[mask],
                next_obs=np.asarray(next_obs)[mask],
                terminated=terminated[mask],
                steps=np.ones(int(mask.sum()), dtype=np.int64),
            )

        # Copy once: the caller (or a wrapper) may reuse its arrays in place next step.
        obs = np.array(obs)
        actions = np.array(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        next_obs = np.array(next_obs)

        out: list[_Finished] = []
        for env in np.flatnonzero(mask):
            step = _Step(obs[env], actions[env], float(rewards[env]), next_obs[env])
            self._advance(env, step, bool(done[env]), bool(terminated[env]), out)
        return _stack(out)

    def push_one(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> NStepOut | None:
        """`push` for env 0 of one plain env (no vector-env dimension, no mask).

        Args:
            obs: (*obs_shape) observation the action was taken in.
            action: the action.
            reward: its reward.
            next_obs: (*obs_shape) observation after the step; at an episode's end the real
                final observation (not the reset one).
            terminated: whether the episode terminated at this step.
            truncated: whether it was truncated at this step.

        Returns:
            The finished transitions, or None when none finished.
        """
        # Copied: the caller may reuse its arrays in place next step.
        step = _Step(np.array(obs), np.array(action), float(reward), np.array(next_obs))
        out: list[_Finished] = []
        self._advance(0, step, bool(terminated or truncated), bool(terminated), out)
        return _stack(out)

    def _advance(
        self, env: int, step: _Step, done: bool, terminated: bool, out: list[_Finished]
    ) -> None:
        """Append `step` to env's window and move what it finishes to `out`."""
        window = self._pending[env]
        window.append(step)
        if done:
            final = step.next_obs
            for k in range(len(window), 0, -1):
                out.append((window[0], self._discounted(window), final, terminated, k))
                window.popleft()
        elif len(window) == self.n:
            out.append((window[0], self._discounted(window), step.next_obs, False, self.n))
            window.popleft()


def _stack(out: list[_Finished]) -> NStepOut | None:
    """The finished transitions as one NStepOut, or None when there are none."""
    if not out:
        return None
    return NStepOut(
        obs=np.stack([step.obs for step, *_ in out]),
        actions=np.stack([step.action for step, *_ in out]),
        returns=np.array([ret for _, ret, *_ in out], dtype=np.float32),
        next_obs=np.stack([final for _, _, final, *_ in out]),
        terminated=np.array([term for *_, term, _ in out], dtype=np.bool_),
        steps=np.array([k for *_, k in out], dtype=np.int64),
    )
