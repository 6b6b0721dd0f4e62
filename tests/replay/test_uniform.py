"""FlatStorage with uniform sampling: ring wrap-around, sampling of filled slots, discounts,
checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from qlearn.errors import TrainingError
from qlearn.replay import FlatStorage, ReplayMemory, UniformSampler, estimate_bytes, make_memory


def make_buffer(capacity: int, gamma: float = 0.9) -> ReplayMemory:
    return make_memory(capacity, (2,), np.float32, 3, gamma)


def flat(buffer: ReplayMemory) -> FlatStorage:
    assert isinstance(buffer.storage, FlatStorage)
    return buffer.storage


def add_numbered(buffer: ReplayMemory, start: int, count: int, steps: int = 1) -> np.ndarray:
    """Add transitions whose obs, reward and action encode their number."""
    values = np.arange(start, start + count, dtype=np.float32)
    obs = np.stack([values, values], axis=1)
    return buffer.add_transitions(
        obs, values.astype(np.int64) % 3, values, obs + 0.5, values % 2 == 1, steps
    )


def test_make_memory_composes_flat_storage_and_uniform_sampling() -> None:
    buffer = make_buffer(4)
    assert isinstance(buffer.storage, FlatStorage)
    assert isinstance(buffer.sampler, UniformSampler)
    assert buffer.accumulator is None


def test_ring_wraps_and_overwrites_the_oldest() -> None:
    buffer = make_buffer(4)
    np.testing.assert_array_equal(add_numbered(buffer, 0, 3), [0, 1, 2])
    np.testing.assert_array_equal(add_numbered(buffer, 3, 3), [3, 0, 1])  # wraps
    storage = flat(buffer)
    assert (storage.pos, len(buffer)) == (2, 4)
    np.testing.assert_array_equal(storage.returns, [4.0, 5.0, 2.0, 3.0])
    np.testing.assert_array_equal(storage.next_obs[:, 0], [4.5, 5.5, 2.5, 3.5])
    np.testing.assert_array_equal(storage.terminated, [False, True, False, True])
    assert buffer.add_one(np.full(2, 6.0), 0, 6.0, np.full(2, 6.5), False) == 2
    assert storage.pos == 3
    np.testing.assert_array_equal(storage.returns, [4.0, 5.0, 6.0, 3.0])


def test_sampling_draws_only_filled_slots() -> None:
    buffer = make_buffer(100)
    add_numbered(buffer, 0, 5)
    batch = buffer.sample(1000, np.random.default_rng(0))
    assert set(batch.indices.tolist()) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(batch.returns, batch.indices.astype(np.float32))
    np.testing.assert_array_equal(batch.obs[:, 0], batch.returns)
    np.testing.assert_array_equal(batch.weights, np.ones(1000, np.float32))


def test_sampling_an_empty_buffer_raises() -> None:
    with pytest.raises(TrainingError, match="empty replay buffer"):
        make_buffer(4).sample(1, np.random.default_rng(0))


def test_discounts_come_from_stored_step_counts() -> None:
    buffer = make_buffer(8, gamma=0.9)
    add_numbered(buffer, 0, 1)  # steps 1
    buffer.add_transitions(
        np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.zeros((2, 2)), np.zeros(2), [3, 5]
    )
    batch = buffer.gather(np.array([0, 1, 2]))
    # γ^1 = 0.9, γ^3 = 0.729, γ^5 = 0.59049
    np.testing.assert_allclose(batch.discounts, [0.9, 0.729, 0.59049], rtol=1e-6)
    assert batch.discounts.dtype == np.float32
    assert batch.terminated.dtype == np.float32 and batch.actions.dtype == np.int64


def test_state_dict_round_trip() -> None:
    buffer = make_buffer(4)
    add_numbered(buffer, 0, 6, steps=2)  # wrapped: pos 2
    state = buffer.state_dict()
    restored = make_buffer(4)
    restored.load_state_dict(state)
    assert (flat(restored).pos, flat(restored).size) == (2, 4)
    for name in ("obs", "next_obs", "actions", "returns", "terminated", "steps"):
        np.testing.assert_array_equal(getattr(flat(restored), name), getattr(flat(buffer), name))
    a = buffer.sample(32, np.random.default_rng(7))
    b = restored.sample(32, np.random.default_rng(7))
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.discounts, b.discounts)


def test_state_dict_saves_only_the_filled_part() -> None:
    buffer = make_buffer(10)
    add_numbered(buffer, 0, 3)
    state = buffer.state_dict()
    assert state["replay.obs"].shape == (3, 2)
    np.testing.assert_array_equal(state["replay.pos"], [3, 3])


def test_loading_into_a_larger_buffer_appends_after_the_filled_slots() -> None:
    # A full 4-slot buffer written up to pos 2; in an 8-slot buffer the next write must go to the
    # first empty slot (4), not overwrite live slot 2 while slots 4..7 stay empty.
    small = make_buffer(4)
    add_numbered(small, 0, 6)
    large = make_buffer(8)
    large.load_state_dict(small.state_dict())
    assert large.add_one(np.zeros(2), 0, 100.0, np.zeros(2), False) == 4
    assert len(large) == 5
    batch = large.sample(500, np.random.default_rng(0))
    assert set(batch.returns.tolist()) == {4.0, 5.0, 2.0, 3.0, 100.0}


def test_loading_into_a_smaller_buffer_that_the_data_fills() -> None:
    # 6 transitions saved from a 10-slot buffer (pos 6) fill a 6-slot buffer exactly: the next
    # write overwrites the oldest, slot 0, rather than indexing past the end.
    big = make_buffer(10)
    add_numbered(big, 0, 6)
    exact = make_buffer(6)
    exact.load_state_dict(big.state_dict())
    assert exact.add_one(np.zeros(2), 0, 100.0, np.zeros(2), False) == 0


def test_loading_more_transitions_than_capacity_raises() -> None:
    big = make_buffer(10)
    add_numbered(big, 0, 6)
    with pytest.raises(TrainingError, match="holds 6 transitions, more than buffer_size = 4"):
        make_buffer(4).load_state_dict(big.state_dict())


def test_nbytes_matches_the_estimate() -> None:
    buffer = make_memory(7, (3, 2), np.uint8, 300, 0.99)
    # 7 * (2 * 6 obs bytes + 4 (int32 actions for > 256 actions) + 4 + 1 + 1) = 154
    assert estimate_bytes(7, (3, 2), np.uint8, 300) == 154
    assert buffer.nbytes == 154
