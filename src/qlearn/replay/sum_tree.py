"""A binary sum tree over priorities, in one numpy array, with vectorised update and search."""

from __future__ import annotations

import math

import numpy as np

from qlearn.errors import ConfigError, TrainingError


def _num_leaves(capacity: int) -> int:
    """The smallest power of two >= capacity: the tree is perfect, so every level is a slice."""
    return 1 << max(0, (capacity - 1).bit_length())


class SumTree:
    """Priorities p_0..p_{capacity-1} with O(log n) update and prefix-sum search.

    Layout: one float64 array of 2 * L nodes, L = capacity rounded up to a power of two. Node 1 is
    the root, node i has children 2i and 2i + 1, and leaf j lives at node L + j. Node 0 and the
    padding leaves past `capacity` stay 0. Parents are recomputed from their children (not patched
    by deltas), so rounding error never accumulates across updates.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"capacity = {capacity!r} is invalid; allowed: >= 1")
        self.capacity = capacity
        self._num_leaves = _num_leaves(capacity)
        self._depth = self._num_leaves.bit_length() - 1
        self._nodes = np.zeros(2 * self._num_leaves, dtype=np.float64)
        self._max_priority = 0.0

    @staticmethod
    def bytes_for(capacity: int) -> int:
        """Bytes a tree of `capacity` leaves allocates."""
        return 2 * _num_leaves(capacity) * np.dtype(np.float64).itemsize

    @property
    def nbytes(self) -> int:
        return self._nodes.nbytes

    @property
    def max_priority(self) -> float:
        """The largest priority ever written (0.0 before the first write); it never decreases."""
        return self._max_priority

    @max_priority.setter
    def max_priority(self, value: float) -> None:
        self._max_priority = float(value)

    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._nodes[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities at leaf `indices`, shape of `indices`, float64."""
        indices = self._check_indices(np.asarray(indices, dtype=np.int64))
        return self._nodes[self._num_leaves + indices]

    def update(self, indices: np.ndarray, priorities: np.ndarray | float) -> None:
        """Set the priorities of leaves `indices`; with repeated indices the last write wins.

        Args:
            indices: (k,) leaf indices in [0, capacity).
            priorities: (k,) finite, non-negative priorities (or one value for all).
        """
        indices = self._check_indices(np.asarray(indices, dtype=np.int64).ravel())
        priorities = np.asarray(priorities, dtype=np.float64).ravel()
        if priorities.size == 1 and indices.size != 1:
            priorities = np.full(indices.shape, priorities[0])
        if priorities.shape != indices.shape:
            raise TrainingError(
                f"{priorities.size} priorities for {indices.size} indices; allowed: one each"
            )
        if indices.size == 0:
            return
        self._check_priorities(priorities)
        self._max_priority = max(self._max_priority, float(priorities.max()))
        if indices.size == 1:
            self._write_one(int(indices[0]), float(priorities[0]))
            return
        nodes = self._nodes
        # Keep the last occurrence of each index: unique() on the reversed array reports first ones.
        unique, first_in_reversed = np.unique(indices[::-1], return_index=True)
        node = unique + self._num_leaves  # (u,)
        nodes[node] = priorities[::-1][first_in_reversed]
        for _ in range(self._depth):
            # A parent is the sum of a node and its sibling (node ^ 1). Siblings both in `node`
            # write the same sum twice, which is harmless and cheaper than deduplicating.
            total = nodes[node] + nodes[node ^ 1]
            node >>= 1
            nodes[node] = total

    def update_one(self, index: int, priority: float) -> None:
        """Set one leaf's priority: `update` without numpy's per-call overhead (for add_one)."""
        if not 0 <= index < self.capacity:
            raise TrainingError(
                f"sum tree index {index} is out of range; allowed: [0, {self.capacity})"
            )
        priority = float(priority)
        if not (math.isfinite(priority) and priority >= 0):
            raise TrainingError(
                f"priority {priority!r} is invalid; allowed: finite and >= 0 "
                "(a NaN or inf TD error?)"
            )
        self._max_priority = max(self._max_priority, float(priority))
        self._write_one(int(index), float(priority))

    def _write_one(self, index: int, priority: float) -> None:
        nodes = self._nodes
        node = index + self._num_leaves
        nodes[node] = priority
        while node > 1:
            total = nodes[node] + nodes[node ^ 1]
            node >>= 1
            nodes[node] = total

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """Leaf index of each prefix sum: the i with p_0 + ... + p_{i-1} <= u < p_0 + ... + p_i.

        This is `np.searchsorted(np.cumsum(p), u, side="right")` for u in [0, total()), computed by
        one descent per level for all u at once. A u that reaches a leaf of zero priority (u at or
        past total(), possibly by rounding, or u < 0) is searched again with a descent that never
        enters a subtree of zero sum, so the answer is always a leaf with positive priority (the
        last or first one, up to rounding) and never an empty slot.

        Args:
            prefix_sums: (k,) values in [0, total()).

        Returns:
            (k,) int64 leaf indices, each with a positive priority.
        """
        if not self._nodes[1] > 0:
            raise TrainingError(
                f"cannot search a sum tree whose total priority is {self.total()!r}; "
                "allowed: > 0 (add transitions first)"
            )
        nodes = self._nodes
        prefix_sums = np.asarray(prefix_sums, dtype=np.float64).ravel()  # (k,)
        u = prefix_sums.copy()
        node = np.ones(u.shape, dtype=np.int64)  # (k,)
        for _ in range(self._depth):
            node <<= 1
            left_sum = nodes[node]
            go_right = u >= left_sum
            np.subtract(u, left_sum, out=u, where=go_right)
            node += go_right
        stray = nodes[node] <= 0
        if stray.any():
            node[stray] = self._find_positive(prefix_sums[stray])
        return node - self._num_leaves

    def _find_positive(self, u: np.ndarray) -> np.ndarray:
        """Node ids for prefix sums `u`, choosing at each level a child of positive sum."""
        nodes = self._nodes
        u = u.copy()
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = 2 * node
            left_sum = nodes[left]
            go_right = ((u >= left_sum) & (nodes[left + 1] > 0)) | (left_sum <= 0)
            np.subtract(u, left_sum, out=u, where=go_right)
            node = left + go_right
        return node

    def leaves(self) -> np.ndarray:
        """A copy of all `capacity` priorities."""
        return self._nodes[self._num_leaves : self._num_leaves + self.capacity].copy()

    def clear(self) -> None:
        """Set every priority and the recorded maximum to 0."""
        self._nodes[:] = 0.0
        self._max_priority = 0.0

    @staticmethod
    def _check_priorities(priorities: np.ndarray) -> None:
        if not (np.isfinite(priorities).all() and (priorities >= 0).all()):
            bad = float(priorities[~(np.isfinite(priorities) & (priorities >= 0))][0])
            raise TrainingError(
                f"priority {bad!r} is invalid; allowed: finite and >= 0 (a NaN or inf TD error?)"
            )

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            bad = indices[(indices < 0) | (indices >= self.capacity)].flat[0]
            raise TrainingError(
                f"sum tree index {int(bad)} is out of range; allowed: [0, {self.capacity})"
            )
        return indices
