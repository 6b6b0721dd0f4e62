"""Where transitions live: the `Storage` protocol and `FlatStorage`, a ring of numpy arrays.

A storage keeps finished transitions (n-step ones included) in numbered slots and gives them
back by slot; it does not choose which to sample (a `Sampler` does) nor build n-step returns (the
`NStepAccumulator` does). `ReplayMemory` composes the three.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple, Protocol

import numpy as np

from qlearn.errors import TrainingError

STATE_PREFIX = "replay."
"""Every key a storage or sampler writes into a checkpoint starts with it."""


class Rows(NamedTuple):
    """Stored transitions as `Storage.gather` returns them; leading dimension is the rows."""

    obs: np.ndarray  # (rows, *obs_shape)
    actions: np.ndarray  # (rows,) int64
    returns: np.ndarray  # (rows,) float32: n-step returns (the reward when steps = 1)
    next_obs: np.ndarray  # (rows, *obs_shape), `steps` steps after obs
    terminated: np.ndarray  # (rows,) float32 in {0, 1}
    steps: np.ndarray | int  # (rows,) uint8: env steps each transition spans; or one int


class Storage(Protocol):
    """Fixed-capacity storage of transitions in slots 0..capacity-1.

    `evict_hook`, when set, is called with the slot of each transition that leaves the storage
    other than by being overwritten in place by a new row (frame storage evicts transitions whose
    frames it must reuse); the prioritized sampler sets their priority to 0 through it.
    """

    capacity: int
    size: int
    evict_hook: Callable[[int], None] | None

    @property
    def nbytes(self) -> int: ...

    def add(self, rows: Rows) -> np.ndarray:
        """Store rows (one transition each); return the (rows,) int64 slots written."""
        ...

    def add_one(
        self, obs: np.ndarray, action: int, ret: float, next_obs: np.ndarray, terminated: bool
    ) -> int:
        """Store one 1-step transition; return its slot."""
        ...

    def gather(self, slots: np.ndarray) -> Rows:
        """The transitions at `slots`."""
        ...

    def slots_at(self, positions: np.ndarray) -> np.ndarray:
        """Slots of the live transitions at `positions` in [0, size), in the storage's order."""
        ...

    def is_live(self, slots: np.ndarray) -> np.ndarray:
        """(k,) bool: whether each slot holds a stored transition."""
        ...

    def state_slots(self) -> np.ndarray:
        """Slots in the order `state_dict` saves them; after `load_state_dict` they are
        0..size-1 in that order."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


def action_dtype(num_actions: int) -> np.dtype:
    """The smallest dtype storing actions 0..num_actions-1."""
    return np.dtype(np.uint8 if num_actions <= 256 else np.int32)


def estimate_bytes(
    capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | str, num_actions: int
) -> int:
    """Bytes a FlatStorage allocates for `capacity` transitions."""
    obs_bytes = math.prod(obs_shape) * np.dtype(obs_dtype).itemsize
    # obs + next_obs, action, return (f4), terminated (1), steps (1)
    per = 2 * obs_bytes + action_dtype(num_actions).itemsize + 4 + 1 + 1
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


def check_state_size(size: int, capacity: int) -> None:
    """Refuse a checkpointed replay of more transitions than `capacity`."""
    if size > capacity:
        raise TrainingError(
            f"checkpointed replay holds {size} transitions, more than buffer_size = {capacity}"
        )


class FlatStorage:
    """A preallocated ring of arrays holding `obs` and `next_obs` whole; the newest row
    overwrites the oldest.

    Storing `next_obs` beside `obs` keeps the next state of a truncated episode as its real
    final observation (it bootstraps), while `terminated` cuts the bootstrap.

    Args:
        capacity: transitions kept.
        obs_shape: shape of one observation as stored.
        obs_dtype: dtype of the observations as stored.
        num_actions: size of the action set (picks the action dtype).
    """

    # Checkpoint key of each array; `returns` keeps its old name so older checkpoints load.
    _STATE_NAMES: ClassVar[dict[str, str]] = {
        "obs": "obs",
        "next_obs": "next_obs",
        "actions": "actions",
        "returns": "rewards",
        "terminated": "terminated",
        "steps": "steps",
    }

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str,
        num_actions: int,
    ) -> None:
        check_fits(estimate_bytes(capacity, obs_shape, obs_dtype, num_actions))
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=action_dtype(num_actions))
        self.returns = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.steps = np.ones(capacity, dtype=np.uint8)
        self.pos = 0  # slot the next row goes to
        self.size = 0
        self.evict_hook: Callable[[int], None] | None = None  # a ring only overwrites in place

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self._STATE_NAMES}

    def add(self, rows: Rows) -> np.ndarray:
        """Store rows (one transition each) and return the (rows,) slots they went to."""
        n = len(rows.actions)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = rows.obs
        self.next_obs[idx] = rows.next_obs
        self.actions[idx] = rows.actions
        self.returns[idx] = rows.returns
        self.terminated[idx] = rows.terminated
        self.steps[idx] = rows.steps
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        return idx

    def add_one(
        self, obs: np.ndarray, action: int, ret: float, next_obs: np.ndarray, terminated: bool
    ) -> int:
        """Store one 1-step transition; the fast path for a single env."""
        i = self.pos
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.actions[i] = action
        self.returns[i] = ret
        self.terminated[i] = terminated
        self.steps[i] = 1
        self.pos = (i + 1) % self.capacity
        if self.size < self.capacity:
            self.size += 1
        return i

    def gather(self, slots: np.ndarray) -> Rows:
        """The transitions at `slots`."""
        return Rows(
            self.obs[slots],
            self.actions[slots].astype(np.int64),
            self.returns[slots],
            self.next_obs[slots],
            self.terminated[slots].astype(np.float32),
            self.steps[slots],
        )

    def slots_at(self, positions: np.ndarray) -> np.ndarray:
        """Slots 0..size-1 are the filled ones: a position is its slot."""
        return positions

    def is_live(self, slots: np.ndarray) -> np.ndarray:
        return np.asarray(slots) < self.size

    def state_slots(self) -> np.ndarray:
        return np.arange(self.size)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint: only the filled part, plus the write position and size."""
        out = {
            f"{STATE_PREFIX}{key}": getattr(self, name)[: self.size]
            for name, key in self._STATE_NAMES.items()
        }
        out[f"{STATE_PREFIX}pos"] = np.array([self.pos, self.size], dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pos, size = (int(x) for x in state[f"{STATE_PREFIX}pos"])
        check_state_size(size, self.capacity)
        for name, key in self._STATE_NAMES.items():
            getattr(self, name)[:size] = state[f"{STATE_PREFIX}{key}"]
        # Filled slots are [0, size); until they fill the buffer the next write goes right after
        # them. The saved pos only holds for a buffer of the saved capacity: kept as is, it would
        # overwrite live slots of a larger buffer, or point past the end of a smaller one.
        self.pos = pos % self.capacity if size == self.capacity else size
        self.size = size
