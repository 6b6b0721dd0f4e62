"""SumTree against brute-force numpy: totals, prefix-sum search, sampling frequencies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlearn.errors import ConfigError, TrainingError
from qlearn.replay.sum_tree import SumTree


def tree_with(priorities: np.ndarray) -> SumTree:
    tree = SumTree(len(priorities))
    tree.update(np.arange(len(priorities)), priorities)
    return tree


def test_small_tree_hand_computed() -> None:
    tree = tree_with(np.array([1.0, 2.0, 3.0, 4.0, 0.0]))  # 5 leaves, padded to 8
    assert tree.total() == 10.0
    # cumsum = [1, 3, 6, 10, 10]: u in [0, 1) -> 0, [1, 3) -> 1, [3, 6) -> 2, [6, 10) -> 3
    u = np.array([0.0, 0.99, 1.0, 2.5, 3.0, 5.99, 6.0, 9.99])
    np.testing.assert_array_equal(tree.find(u), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(tree.get(np.array([3, 1])), [4.0, 2.0])


def test_capacity_one() -> None:
    tree = tree_with(np.array([0.5]))
    assert tree.total() == 0.5
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.25, 0.4999])), [0, 0, 0])


def test_repeated_indices_last_write_wins() -> None:
    tree = SumTree(4)
    tree.update(np.array([2, 0, 2, 2]), np.array([1.0, 7.0, 5.0, 3.0]))
    np.testing.assert_array_equal(tree.leaves(), [7.0, 0.0, 3.0, 0.0])
    assert tree.total() == 10.0


def test_scalar_priority_broadcasts() -> None:
    tree = SumTree(3)
    tree.update(np.array([0, 2]), 2.5)
    np.testing.assert_array_equal(tree.leaves(), [2.5, 0.0, 2.5])


def test_max_priority_is_the_largest_ever_written() -> None:
    tree = SumTree(3)
    assert tree.max_priority == 0.0
    tree.update(np.array([0, 1]), np.array([2.0, 5.0]))
    tree.update(np.array([1]), np.array([1.0]))  # lowering a priority keeps the record
    assert tree.max_priority == 5.0
    assert tree.leaves().max() == 2.0


def test_prefix_sums_at_or_past_the_total_land_on_the_last_positive_leaf() -> None:
    tree = tree_with(np.array([1.0, 2.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(tree.find(np.array([3.0, 3.0 + 1e-12, 100.0])), [1, 1, 1])


def test_negative_prefix_sums_land_on_the_first_positive_leaf() -> None:
    tree = tree_with(np.array([0.0, 0.0, 2.0, 1.0]))
    np.testing.assert_array_equal(tree.find(np.array([-1.0, -1e-300, 0.0])), [2, 2, 2])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_found_leaves_always_have_positive_priority(capacity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Priorities spanning 18 orders of magnitude make the descent's subtractions round.
    p = 10.0 ** rng.uniform(-12, 6, size=capacity) * (rng.random(capacity) < 0.5)
    p[rng.integers(capacity)] = 1e-12
    tree = tree_with(p)
    total = tree.total()
    edges = [0.0, total, np.nextafter(total, 0.0), total * (1 - 1e-15), -1.0, 2 * total]
    u = np.concatenate([rng.uniform(-0.1 * total, 1.1 * total, 200), edges])
    found = tree.find(u)
    assert (p[found] > 0).all()  # which one, at the edges, depends on rounding


def test_update_one_matches_update() -> None:
    a, b = SumTree(5), SumTree(5)
    for i, priority in [(3, 2.0), (0, 1.5), (3, 0.5), (4, 7.0)]:
        a.update_one(i, priority)
        b.update(np.array([i]), np.array([priority]))
    np.testing.assert_array_equal(a.leaves(), b.leaves())
    assert a.total() == b.total() == 9.0
    assert a.max_priority == 7.0
    with pytest.raises(TrainingError, match=r"priority inf"):
        a.update_one(0, float("inf"))
    with pytest.raises(TrainingError, match=r"index 5 is out of range"):
        a.update_one(5, 1.0)


def test_zero_priority_leaves_are_never_found() -> None:
    tree = tree_with(np.array([0.0, 1.0, 0.0, 0.0, 2.0, 0.0]))
    u = np.linspace(0.0, 3.0, 1001)
    assert set(tree.find(u).tolist()) == {1, 4}


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="capacity = 0"):
        SumTree(0)
    tree = SumTree(4)
    with pytest.raises(TrainingError, match=r"total priority is 0\.0"):
        tree.find(np.array([0.0]))
    with pytest.raises(TrainingError, match="priority nan"):
        tree.update(np.array([0, 1]), np.array([1.0, np.nan]))
    with pytest.raises(TrainingError, match=r"priority -1\.0"):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(TrainingError, match=r"index 4 is out of range; allowed: \[0, 4\)"):
        tree.update(np.array([4]), np.array([1.0]))


@st.composite
def update_sequences(draw: st.DrawFn) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    capacity = draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    updates = []
    for _ in range(draw(st.integers(1, 12))):
        k = int(rng.integers(1, 2 * capacity + 2))  # batches bigger than capacity force repeats
        indices = rng.integers(0, capacity, size=k)
        priorities = rng.exponential(size=k) * (rng.random(k) < 0.8)  # some exact zeros
        updates.append((indices, priorities))
    return capacity, updates


@settings(max_examples=100, deadline=None)
@given(update_sequences())
def test_totals_and_leaves_follow_random_updates(
    case: tuple[int, list[tuple[np.ndarray, np.ndarray]]],
) -> None:
    capacity, updates = case
    tree = SumTree(capacity)
    brute = np.zeros(capacity)
    for indices, priorities in updates:
        tree.update(indices, priorities)
        for i, p in zip(indices, priorities, strict=True):  # sequential: the last write wins
            brute[i] = p
        np.testing.assert_array_equal(tree.leaves(), brute)
        assert tree.total() == pytest.approx(brute.sum(), rel=1e-12, abs=1e-12)
    assert tree.max_priority == max(p.max() for _, p in updates)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_find_matches_searchsorted_strictly_inside_intervals(capacity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.exponential(size=capacity) * (rng.random(capacity) < 0.7)
    p[rng.integers(capacity)] = 1.0  # at least one positive leaf
    tree = tree_with(p)
    cumsum = np.cumsum(p)
    # Pick leaves in proportion to nothing in particular, then a point well inside each interval,
    # so rounding in the two different summation orders cannot move it across a boundary.
    positive = np.flatnonzero(p > 0)
    leaves = rng.choice(positive, size=64)
    u = cumsum[leaves] - p[leaves] + rng.uniform(0.01, 0.99, size=64) * p[leaves]
    found = tree.find(u)
    np.testing.assert_array_equal(found, leaves)
    np.testing.assert_array_equal(found, np.searchsorted(cumsum, u, side="right"))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_find_matches_searchsorted_for_uniform_prefix_sums(capacity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.exponential(size=capacity) + 1e-3
    tree = tree_with(p)
    cumsum = np.cumsum(p)
    u = rng.uniform(0.0, tree.total(), size=256)
    # Leave out draws within rounding distance of a boundary, where either answer is fair.
    gap = np.abs(u[:, None] - cumsum[None, :]).min(axis=1)
    u = u[gap > 1e-9 * cumsum[-1]]
    np.testing.assert_array_equal(tree.find(u), np.searchsorted(cumsum, u, side="right"))


def test_sampling_frequencies_follow_priorities() -> None:
    rng = np.random.default_rng(0)
    p = np.array([0.5, 3.0, 0.0, 1.0, 2.0, 0.25, 0.0, 4.0, 1.25])  # 9 leaves, padded to 16
    tree = tree_with(p)
    num_draws = 200_000
    counts = np.bincount(tree.find(rng.uniform(0, tree.total(), num_draws)), minlength=len(p))
    expected = p / p.sum()
    assert counts[p == 0].sum() == 0
    # Each frequency within 5 binomial standard deviations of p_i / Σ p.
    std = np.sqrt(expected * (1 - expected) / num_draws)
    np.testing.assert_array_less(np.abs(counts / num_draws - expected), 5 * std + 1e-12)
    # And a chi-square over the positive leaves, 6 degrees of freedom: P(χ² > 30) ≈ 4e-5.
    pos = p > 0
    chi2 = (((counts[pos] - num_draws * expected[pos]) ** 2) / (num_draws * expected[pos])).sum()
    assert chi2 < 30.0


def test_bytes_for_counts_the_padded_array() -> None:
    assert SumTree.bytes_for(5) == 2 * 8 * 8
    assert SumTree(5).nbytes == SumTree.bytes_for(5)
    assert SumTree.bytes_for(1) == 2 * 8
