"""PrioritizedSampler in a replay memory: priorities, stratified sampling, importance weights,
checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.replay import (
    PrioritizedSampler,
    ReplayMemory,
    SumTree,
    estimate_bytes,
    estimate_replay_bytes,
    make_memory,
)


class FixedRandom:
    """Stands in for np.random.Generator where a test needs chosen uniform draws."""

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def random(self, size: int) -> np.ndarray:
        assert size == len(self.values)
        return self.values


class Prioritized(ReplayMemory):
    """A replay memory whose sampler the test knows to be prioritized."""

    @property
    def tree(self) -> SumTree:
        assert isinstance(self.sampler, PrioritizedSampler)
        return self.sampler.tree


def make_buffer(capacity: int = 4, alpha: float = 0.5, eps: float = 0.5) -> Prioritized:
    memory = make_memory(capacity, (2,), np.float32, 3, 0.9, prioritized=True, alpha=alpha, eps=eps)
    return Prioritized(memory.storage, memory.sampler, memory.gamma)


def fill(buffer: ReplayMemory, count: int, start: int = 0) -> np.ndarray:
    values = np.arange(start, start + count, dtype=np.float32)
    obs = np.stack([values, -values], axis=1)  # (count, 2), row i identifies transition i
    return buffer.add(obs, values.astype(np.int64) % 3, values, obs + 1, np.zeros(count, bool))


def buffer_with_priorities_1234() -> Prioritized:
    buffer = make_buffer()
    fill(buffer, 4)
    # (|δ| + eps)^α with eps = 0.5, α = 0.5: (0.5 + 0.5)^.5 = 1, (3.5 + 0.5)^.5 = 2, 3, 4
    buffer.update_priorities(np.arange(4), np.array([0.5, -3.5, 8.5, -15.5]))
    return buffer


def test_priorities_are_abs_td_plus_eps_to_the_alpha() -> None:
    buffer = buffer_with_priorities_1234()
    np.testing.assert_allclose(buffer.tree.leaves(), [1.0, 2.0, 3.0, 4.0])
    assert buffer.tree.total() == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("beta", "expected"),
    [
        # P = [.1, .2, .3, .4], N = 4; draws land on slots [0, 2, 3, 3] (see below).
        # β = 1: (N P)^-1 = [1/0.4, 1/1.2, 1/1.6, 1/1.6] = [2.5, .8333, .625, .625]; / max 2.5
        (1.0, [1.0, 1 / 3, 0.25, 0.25]),
        # β = 0.5: the square roots of the β = 1 weights
        (0.5, [1.0, np.sqrt(1 / 3), 0.5, 0.5]),
        # β = 0: no correction
        (0.0, [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_stratified_sample_and_weights_hand_computed(beta: float, expected: list[float]) -> None:
    buffer = buffer_with_priorities_1234()
    # Segments of the total 10 are [0, 2.5), [2.5, 5), [5, 7.5), [7.5, 10); the draws put
    # prefix sums at 0.5, 4.75, 6.25, 7.75, and cumsum = [1, 3, 6, 10] maps them to 0, 2, 3, 3.
    rng = FixedRandom([0.2, 0.9, 0.5, 0.1])
    batch = buffer.sample(4, rng, beta)  # type: ignore[arg-type]
    np.testing.assert_array_equal(batch.indices, [0, 2, 3, 3])
    np.testing.assert_allclose(batch.weights, expected, rtol=1e-6)
    assert batch.weights.dtype == np.float32
    np.testing.assert_array_equal(batch.obs[:, 0], [0.0, 2.0, 3.0, 3.0])  # the right rows


def test_equal_priorities_and_a_full_batch_draw_each_slot_once() -> None:
    buffer = make_buffer(capacity=8)
    fill(buffer, 8)
    batch = buffer.sample(8, np.random.default_rng(3), beta=1.0)
    np.testing.assert_array_equal(batch.indices, np.arange(8))  # one per segment
    np.testing.assert_array_equal(batch.weights, np.ones(8, np.float32))


def test_new_transitions_get_the_max_priority_so_far() -> None:
    buffer = make_buffer()
    fill(buffer, 2)
    np.testing.assert_array_equal(buffer.tree.get(np.arange(2)), [1.0, 1.0])  # before any update
    buffer.update_priorities(np.array([0, 1]), np.array([8.5, 0.5]))  # priorities 3, 1
    slot = buffer.add_one(np.zeros(2), 1, 0.0, np.zeros(2), False)
    assert buffer.tree.get(np.array([slot]))[0] == pytest.approx(3.0)
    buffer.update_priorities(np.array([0]), np.array([0.5]))  # lowered: the record stays 3
    slots = fill(buffer, 2, start=10)  # wraps: slots 3 and 0
    np.testing.assert_array_equal(slots, [3, 0])
    np.testing.assert_allclose(buffer.tree.get(slots), [3.0, 3.0])


def test_only_filled_slots_are_sampled() -> None:
    buffer = make_buffer(capacity=10)
    fill(buffer, 3)
    batch = buffer.sample(256, np.random.default_rng(0), beta=0.4)
    assert set(batch.indices.tolist()) <= {0, 1, 2}


def test_sampling_frequencies_follow_priorities() -> None:
    buffer = buffer_with_priorities_1234()
    rng = np.random.default_rng(0)
    num_draws = 64 * 2000
    counts = np.zeros(4)
    for _ in range(2000):
        counts += np.bincount(buffer.sample(64, rng, beta=0.4).indices, minlength=4)
    # Stratification only lowers the variance below the binomial one used as a bound here.
    expected = np.array([0.1, 0.2, 0.3, 0.4])
    std = np.sqrt(expected * (1 - expected) / num_draws)
    np.testing.assert_array_less(np.abs(counts / num_draws - expected), 5 * std)


def test_update_priorities_changes_sampling() -> None:
    buffer = make_buffer(capacity=8, alpha=1.0, eps=1e-6)
    fill(buffer, 8)
    rng = np.random.default_rng(1)
    before = np.bincount(buffer.sample(4000, rng, beta=0.4).indices, minlength=8)
    assert before.min() == before.max() == 500  # uniform and stratified: exactly even
    # Slot 5 now holds 93% of the mass: (|δ|+eps) = [1 x7, 100] -> 100 / 107.
    buffer.update_priorities(np.arange(8), np.array([1.0] * 5 + [100.0] + [1.0] * 2) - 1e-6)
    after = np.bincount(buffer.sample(4000, rng, beta=0.4).indices, minlength=8)
    assert after[5] / 4000 == pytest.approx(100 / 107, abs=0.01)


def test_update_priorities_repeated_index_last_wins() -> None:
    buffer = make_buffer()
    fill(buffer, 4)
    buffer.update_priorities(np.array([1, 1]), np.array([15.5, 0.5]))  # -> 4, then 1
    assert buffer.tree.get(np.array([1]))[0] == pytest.approx(1.0)
    assert buffer.tree.max_priority == pytest.approx(4.0)


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"per_alpha = 1.5 is out of range; allowed: \[0, 1\]"):
        make_buffer(alpha=1.5)
    with pytest.raises(ConfigError, match=r"per_eps = 0\.0"):
        make_buffer(eps=0.0)
    buffer = make_buffer()
    with pytest.raises(TrainingError, match="empty replay buffer"):
        buffer.sample(4, np.random.default_rng(0), beta=0.4)
    fill(buffer, 4)
    with pytest.raises(TrainingError, match=r"beta = 1.5 is out of range; allowed: \[0, 1\]"):
        buffer.sample(4, np.random.default_rng(0), beta=1.5)
    with pytest.raises(TrainingError, match="TD error nan"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0, np.nan]))


def test_state_dict_round_trip_restores_priorities_and_sampling() -> None:
    buffer = buffer_with_priorities_1234()
    fill(buffer, 1, start=7)  # slot 0, at the max priority 4
    state = buffer.state_dict()
    np.testing.assert_allclose(state["replay.priorities"], [4.0, 2.0, 3.0, 4.0])
    restored = make_buffer()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.tree.leaves(), buffer.tree.leaves())
    assert restored.tree.max_priority == buffer.tree.max_priority
    a = buffer.sample(16, np.random.default_rng(5), beta=0.6)
    b = restored.sample(16, np.random.default_rng(5), beta=0.6)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.obs, b.obs)


def test_state_dict_of_a_partly_filled_buffer_into_a_larger_one() -> None:
    buffer = make_buffer(capacity=6)
    fill(buffer, 3)
    buffer.update_priorities(np.arange(3), np.array([0.5, 3.5, 8.5]))  # 1, 2, 3
    restored = make_buffer(capacity=10)
    restored.load_state_dict(buffer.state_dict())
    np.testing.assert_allclose(restored.tree.leaves(), [1, 2, 3, 0, 0, 0, 0, 0, 0, 0])
    assert fill(restored, 1, start=9)[0] == 3  # appended after the filled slots
    assert restored.tree.get(np.array([3]))[0] == pytest.approx(3.0)


def test_loading_a_uniform_checkpoint_names_the_missing_key() -> None:
    uniform = make_memory(4, (2,), np.float32, 3, 0.9)
    fill(uniform, 2)
    with pytest.raises(CheckpointError, match=r"'replay\.priorities'"):
        make_buffer().load_state_dict(uniform.state_dict())


def test_memory_accounting_includes_the_sum_tree() -> None:
    buffer = make_buffer(capacity=5)
    # Ring buffer: 5 * (2 * 2 * 4 obs bytes + 1 action + 4 reward + 1 terminated + 1 steps) = 115;
    # sum tree: 5 leaves padded to 8, 16 float64 nodes = 128.
    assert estimate_bytes(5, (2,), np.float32, 3) == 115
    assert estimate_replay_bytes(5, (2,), np.float32, 3, prioritized=True) == 115 + 128
    assert buffer.nbytes == 115 + 128
