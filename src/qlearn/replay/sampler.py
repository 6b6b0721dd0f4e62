"""Which stored transitions a mini-batch draws: the `Sampler` protocol, uniform and prioritized.

A sampler sees slots only: the storage tells it which are live (`Storage.slots_at`,
`Storage.is_live`) and calls it back when transitions arrive (`on_add`, `on_add_one`) or leave
early (`on_evict`, through the storage's `evict_hook`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.replay.storage import STATE_PREFIX, Storage, check_fits
from qlearn.replay.sum_tree import SumTree


class Sampler(Protocol):
    """Chooses the slots of a mini-batch and, where it samples non-uniformly, their weights."""

    @property
    def nbytes(self) -> int: ...

    def on_add(self, slots: np.ndarray) -> None:
        """Transitions were written to `slots` ((k,) int64)."""
        ...

    def on_add_one(self, slot: int) -> None:
        """One transition was written to `slot` (`on_add` without numpy's per-call cost)."""
        ...

    def on_evict(self, slot: int) -> None:
        """The transition in `slot` left the storage; it must not be drawn again."""
        ...

    def sample(
        self, batch_size: int, rng: np.random.Generator, storage: Storage, beta: float
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(batch_size,) int64 slots of live transitions, and their (batch_size,) float32
        importance weights, or None for unit weights."""
        ...

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Learn from the TD errors of the transitions in `slots` (live ones only)."""
        ...

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        """Raise CheckpointError unless `state` holds what `load_state_dict` restores."""
        ...

    def state_dict(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays to checkpoint, for the transitions in `slots` in the order given."""
        ...

    def load_state_dict(self, state: dict[str, np.ndarray], size: int) -> None:
        """Restore the state of `size` transitions now in slots 0..size-1."""
        ...


class UniformSampler:
    """Draws live transitions uniformly with replacement; keeps no state."""

    nbytes = 0

    def on_add(self, slots: np.ndarray) -> None:
        pass

    def on_add_one(self, slot: int) -> None:
        pass

    def on_evict(self, slot: int) -> None:
        pass

    def sample(
        self, batch_size: int, rng: np.random.Generator, storage: Storage, beta: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Uniform slots; `beta` is ignored (all weights are 1)."""
        return storage.slots_at(rng.integers(0, storage.size, size=batch_size)), None

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        pass

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def state_dict(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray], size: int) -> None:
        pass


class PrioritizedSampler:
    """Proportional prioritized sampling (Schaul et al., 2016) over a sum tree of slots.

    Slot i is drawn with probability P(i) = p_i / Σ_k p_k. Priorities are stored already raised
    to α: p_i = (|δ_i| + eps)^α after `update_priorities`. A new transition gets the largest
    priority written so far (1.0 before any), so it is sampled at least once soon; an evicted
    one gets 0. Importance weights correct the bias of non-uniform sampling:

        w_i = (N · P(i))^(−β) / max_{j in batch} w_j

    normalised by the maximum over the *sampled batch* (as in Schaul et al.'s Algorithm 1 and
    Dopamine) rather than over the whole buffer, so the largest weight in a batch is exactly 1 and
    weights only ever scale the loss down.

    Args:
        capacity: slots of the storage it samples from.
        alpha: priority exponent in [0, 1] (`per_alpha`).
        eps: added to |δ| so every priority is positive (`per_eps`).
    """

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"per_alpha = {alpha!r} is out of range; allowed: [0, 1]")
        if not eps > 0.0:
            raise ConfigError(f"per_eps = {eps!r} is out of range; allowed: (0, inf)")
        check_fits(SumTree.bytes_for(capacity), "prioritized replay's sum tree")
        self.alpha = alpha
        self.eps = eps
        self.tree = SumTree(capacity)

    @property
    def nbytes(self) -> int:
        return self.tree.nbytes

    def on_add(self, slots: np.ndarray) -> None:
        self.tree.update(slots, self.tree.max_priority or 1.0)

    def on_add_one(self, slot: int) -> None:
        self.tree.update_one(slot, self.tree.max_priority or 1.0)

    def on_evict(self, slot: int) -> None:
        self.tree.update_one(slot, 0.0)

    def sample(
        self, batch_size: int, rng: np.random.Generator, storage: Storage, beta: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Stratified proportional sampling with importance weights.

        The total priority is cut into `batch_size` equal segments and one prefix sum is drawn
        uniformly in each, which lowers the variance of the batch's composition compared with
        independent draws. A slot can still appear twice when its priority spans two segments.

        Args:
            batch_size: transitions to draw.
            rng: the generator all replay randomness comes from.
            storage: the storage the slots belong to (gives N, its number of transitions).
            beta: importance-weight exponent in [0, 1]; 0 gives unit weights, 1 fully corrects
                the sampling bias (the default). The agent anneals it from `per_beta_start` to 1.

        Returns:
            (batch,) int64 slots and (batch,) float32 weights (max 1).
        """
        if batch_size < 1:
            raise TrainingError(f"batch_size = {batch_size!r} is invalid; allowed: >= 1")
        if not 0.0 <= beta <= 1.0:
            raise TrainingError(f"beta = {beta!r} is out of range; allowed: [0, 1]")
        total = self.tree.total()
        segment = total / batch_size
        prefix = (np.arange(batch_size) + rng.random(batch_size)) * segment  # (batch,)
        slots = self.tree.find(prefix)  # (batch,) int64
        probs = self.tree.get(slots) / total  # (batch,)
        weights = (storage.size * probs) ** -beta
        weights /= weights.max()
        return slots, weights.astype(np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Set p_i = (|δ_i| + eps)^α for `slots`; with repeats the last one wins.

        Args:
            slots: (batch,) slots as returned in `Batch.indices`.
            td_errors: (batch,) TD errors (or per-sample distributional losses), finite.
        """
        td_errors = np.asarray(td_errors, dtype=np.float64)
        if not np.all(np.isfinite(td_errors)):
            bad = float(td_errors[~np.isfinite(td_errors)][0])
            raise TrainingError(
                f"TD error {bad!r} passed to update_priorities is invalid; allowed: finite values"
            )
        self.tree.update(slots, (np.abs(td_errors) + self.eps) ** self.alpha)

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        for key in (f"{STATE_PREFIX}priorities", f"{STATE_PREFIX}max_priority"):
            if key not in state:
                raise CheckpointError(
                    f"checkpoint has no {key!r}; it was saved without prioritized replay, "
                    "resume it with prioritized = false"
                )

    def state_dict(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The priorities of `slots` in that order, and the largest priority written."""
        return {
            f"{STATE_PREFIX}priorities": self.tree.get(slots),
            f"{STATE_PREFIX}max_priority": np.array([self.tree.max_priority], dtype=np.float64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray], size: int) -> None:
        """Refill the tree with the saved priorities of slots 0..size-1 and the max."""
        self.check_state(state)
        priorities = np.asarray(state[f"{STATE_PREFIX}priorities"], dtype=np.float64)
        if priorities.shape != (size,):
            raise CheckpointError(
                f"checkpoint holds {priorities.shape[0]} replay priorities for {size} "
                "transitions; allowed: one per transition"
            )
        self.tree.clear()
        self.tree.update(np.arange(size), priorities)
        self.tree.max_priority = float(np.asarray(state[f"{STATE_PREFIX}max_priority"]).ravel()[0])
