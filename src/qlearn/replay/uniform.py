"""A preallocated ring buffer of transitions with uniform sampling, all in numpy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qlearn.errors import TrainingError


@dataclasses.dataclass
class Batch:
    """A sampled mini-batch; leading dimension is the batch.

    `discounts` is gamma**k for a k-step transition (k = 1 without n-step returns); the TD target
    is `rewards + discounts * (1 - terminated) * V(next_obs)`. `weights` are importance weights
    (ones under uniform sampling); `indices` locate the samples for priority updates.
    """

    obs: np.ndarray  # (batch, *obs_shape)
    actions: np.ndarray  # (batch,) int64
    rewards: np.ndarray  # (batch,) float32
    next_obs: np.ndarray  # (batch, *obs_shape)
    terminated: np.ndarray  # (batch,) float32 in {0, 1}
    discounts: np.ndarray  # (batch,) float32
    weights: np.ndarray  # (batch,) float32
    indices: np.ndarray  # (batch,) int64


def _action_dtype(num_actions: int) -> np.dtype:
    return np.dtype(np.uint8 if num_actions <= 256 else np.int32)


def estimate_bytes(
    capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | str, num_actions: int
) -> int:
    """Bytes the ring buffer allocates for `capacity` transitions."""
    obs_bytes = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    # obs + next_obs, action, reward (f4), terminated (1), steps (1)
    per = 2 * obs_bytes + _action_dtype(num_actions).itemsize + 4 + 1 + 1
    return capacity * per


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where that is not readable."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(needed: int, what: str = "replay buffer", advice: str = "lower buffer_size") -> None:
    """Refuse an allocation larger than the machine's available memory, naming both numbers."""
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise TrainingError(
            f"{what} needs {needed / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB "
            f"of memory is available; {advice}"
        )


class ReplayBuffer:
    """Fixed-capacity ring buffer; `add` takes one row per env, `sample` draws uniformly.

    The buffer stores `next_obs` beside `obs`, so the next state of a truncated episode is its real
    final observation and bootstraps, while `terminated` cuts the bootstrap.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str,
        num_actions: int,
        gamma: float,
    ) -> None:
        check_fits(estimate_bytes(capacity, obs_shape, obs_dtype, num_actions))
        self.capacity = capacity
        self.gamma = gamma
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=_action_dtype(num_actions))
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.steps = np.ones(capacity, dtype=np.uint8)
        self.pos = 0
        self.size = 0
        # gamma**k for k = 0..255, looked up by the stored step count.
        self._discount_table = (gamma ** np.arange(256)).astype(np.float32)

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "obs": self.obs,
            "next_obs": self.next_obs,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "steps": self.steps,
        }

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        steps: np.ndarray | int = 1,
    ) -> np.ndarray:
        """Store a batch of transitions (one per row) and return the slots they went to."""
        n = len(actions)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminated[idx] = terminated
        self.steps[idx] = steps
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        return idx

    def add_one(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
    ) -> int:
        """Store one 1-step transition; the fast path for a single env."""
        i = self.pos
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = terminated
        self.steps[i] = 1
        self.pos = (i + 1) % self.capacity
        if self.size < self.capacity:
            self.size += 1
        return i

    def gather(self, idx: np.ndarray, weights: np.ndarray | None = None) -> Batch:
        """The transitions at `idx` as a Batch."""
        return Batch(
            obs=self.obs[idx],
            actions=self.actions[idx].astype(np.int64),
            rewards=self.rewards[idx],
            next_obs=self.next_obs[idx],
            terminated=self.terminated[idx].astype(np.float32),
            discounts=self._discount_table[self.steps[idx]],
            weights=np.ones(len(idx), dtype=np.float32) if weights is None else weights,
            indices=idx,
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Draw `batch_size` transitions uniformly with replacement."""
        if self.size == 0:
            raise TrainingError("cannot sample from an empty replay buffer")
        return self.gather(rng.integers(0, self.size, size=batch_size))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint: only the filled part, plus the write position."""
        out = {f"replay.{k}": v[: self.size] for k, v in self._arrays().items()}
        out["replay.pos"] = np.array([self.pos, self.size], dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pos, size = (int(x) for x in state["replay.pos"])
        if size > self.capacity:
            raise TrainingError(
                f"checkpointed replay holds {size} transitions, more than buffer_size "
                f"= {self.capacity}"
            )
        for key, array in self._arrays().items():
            array[:size] = state[f"replay.{key}"]
        # Filled slots are [0, size); until they fill the buffer the next write goes right after
        # them. The saved pos only holds for a buffer of the saved capacity: kept as is, it would
        # overwrite live slots of a larger buffer, or point past the end of a smaller one.
        self.pos = pos % self.capacity if size == self.capacity else size
        self.size = size
