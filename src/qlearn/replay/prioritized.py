"""Proportional prioritized replay (Schaul et al., 2016) on top of the uniform ring buffer."""

from __future__ import annotations

import numpy as np

from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.replay.sum_tree import SumTree
from qlearn.replay.uniform import Batch, ReplayBuffer, check_fits, estimate_bytes


def estimate_prioritized_bytes(
    capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | str, num_actions: int
) -> int:
    """Bytes a PrioritizedReplayBuffer allocates: the ring buffer plus its float64 sum tree."""
    return estimate_bytes(capacity, obs_shape, obs_dtype, num_actions) + SumTree.bytes_for(capacity)


def require_priority_state(state: dict[str, np.ndarray]) -> None:
    """Raise CheckpointError unless a replay state carries priorities (checked before loading)."""
    for key in ("replay.priorities", "replay.max_priority"):
        if key not in state:
            raise CheckpointError(
                f"checkpoint has no {key!r}; it was saved without prioritized replay, "
                "resume it with prioritized = false"
            )


def restore_priorities(tree: SumTree, state: dict[str, np.ndarray], size: int) -> None:
    """Refill `tree` with the saved priorities of slots 0..size-1 (oldest first) and the max."""
    priorities = np.asarray(state["replay.priorities"], dtype=np.float64)
    if priorities.shape != (size,):
        raise CheckpointError(
            f"checkpoint holds {priorities.shape[0]} replay priorities for {size} "
            "transitions; allowed: one per transition"
        )
    tree.clear()
    tree.update(np.arange(size), priorities)
    tree.max_priority = float(np.asarray(state["replay.max_priority"]).ravel()[0])


class PrioritizedReplayBuffer(ReplayBuffer):
    """Ring buffer that samples slot i with probability P(i) = p_i / Σ_k p_k.

    Priorities are stored already raised to α: p_i = (|δ_i| + eps)^α after `update_priorities`.
    A new transition gets the largest priority written so far (1.0 before any), so it is sampled
    at least once soon. Importance weights correct the bias of non-uniform sampling:

        w_i = (N · P(i))^(−β) / max_{j in batch} w_j

    normalised by the maximum over the *sampled batch* (as in Schaul et al.'s Algorithm 1 and
    Dopamine) rather than over the whole buffer, so the largest weight in a batch is exactly 1 and
    weights only ever scale the loss down.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str,
        num_actions: int,
        gamma: float,
        alpha: float = 0.6,
        eps: float = 1e-6,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"per_alpha = {alpha!r} is out of range; allowed: [0, 1]")
        if not eps > 0.0:
            raise ConfigError(f"per_eps = {eps!r} is out of range; allowed: (0, inf)")
        check_fits(
            estimate_prioritized_bytes(capacity, obs_shape, obs_dtype, num_actions),
            "prioritized replay buffer",
        )
        super().__init__(capacity, obs_shape, obs_dtype, num_actions, gamma)
        self.alpha = alpha
        self.eps = eps
        self.tree = SumTree(capacity)

    @staticmethod
    def estimate_bytes(
        capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | str, num_actions: int
    ) -> int:
        """Bytes the buffer allocates, sum tree included (see `estimate_prioritized_bytes`)."""
        return estimate_prioritized_bytes(capacity, obs_shape, obs_dtype, num_actions)

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.tree.nbytes

    def _new_priority(self) -> float:
        return self.tree.max_priority or 1.0

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        steps: np.ndarray | int = 1,
    ) -> np.ndarray:
        """Store a batch of transitions at the maximal priority; return their slots."""
        idx = super().add(obs, actions, rewards, next_obs, terminated, steps)
        self.tree.update(idx, self._new_priority())
        return idx

    def add_one(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
    ) -> int:
        """Store one 1-step transition at the maximal priority; return its slot."""
        i = super().add_one(obs, action, reward, next_obs, terminated)
        self.tree.update_one(i, self._new_priority())
        return i

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> Batch:
        """Stratified proportional sampling with importance weights.

        The total priority is cut into `batch_size` equal segments and one prefix sum is drawn
        uniformly in each, which lowers the variance of the batch's composition compared with
        independent draws. A slot can still appear twice when its priority spans two segments.

        Args:
            batch_size: transitions to draw.
            rng: the generator all replay randomness comes from.
            beta: importance-weight exponent in [0, 1]; 0 gives unit weights, 1 fully corrects
                the sampling bias (the default). The agent anneals it from `per_beta_start` to 1.

        Returns:
            A Batch with float32 `weights` (max 1) and the sampled slots in `indices`.
        """
        if self.size == 0:
            raise TrainingError("cannot sample from an empty replay buffer")
        if batch_size < 1:
            raise TrainingError(f"batch_size = {batch_size!r} is invalid; allowed: >= 1")
        if not 0.0 <= beta <= 1.0:
            raise TrainingError(f"beta = {beta!r} is out of range; allowed: [0, 1]")
        total = self.tree.total()
        segment = total / batch_size
        prefix = (np.arange(batch_size) + rng.random(batch_size)) * segment  # (batch,)
        idx = self.tree.find(prefix)  # (batch,) int64
        probs = self.tree.get(idx) / total  # (batch,)
        weights = (self.size * probs) ** -beta
        weights /= weights.max()
        return self.gather(idx, weights.astype(np.float32))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set p_i = (|δ_i| + eps)^α for the slots `indices` (the Batch's `indices`).

        Args:
            indices: (batch,) slots as returned in `Batch.indices`; repeats: the last one wins.
            td_errors: (batch,) TD errors (or per-sample distributional losses), finite.
        """
        td_errors = np.asarray(td_errors, dtype=np.float64)
        if not np.all(np.isfinite(td_errors)):
            bad = float(td_errors[~np.isfinite(td_errors)][0])
            raise TrainingError(
                f"TD error {bad!r} passed to update_priorities is invalid; allowed: finite values"
            )
        self.tree.update(indices, (np.abs(td_errors) + self.eps) ** self.alpha)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The ring buffer's arrays plus the priorities of the filled slots and the max priority."""
        out = super().state_dict()
        out["replay.priorities"] = self.tree.leaves()[: self.size]
        out["replay.max_priority"] = np.array([self.tree.max_priority], dtype=np.float64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        require_priority_state(state)
        super().load_state_dict(state)
        restore_priorities(self.tree, state, self.size)
