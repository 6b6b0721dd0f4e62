"""ReplayMemory: parts chosen by make_replay, n-step through either add path, old states load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from qlearn import DQN, DQNConfig
from qlearn.envs import EnvSpec
from qlearn.replay import (
    FlatStorage,
    FrameStackStorage,
    PrioritizedSampler,
    UniformSampler,
    make_memory,
    make_replay,
)

DATA = Path(__file__).parent / "data"
CARTPOLE = EnvSpec("box", (4,), "float32", 2)
SMALL = DQNConfig(buffer_size=100, batch_size=8)


def test_make_replay_defaults_to_flat_uniform_one_step() -> None:
    memory = make_replay(SMALL, CARTPOLE)
    assert isinstance(memory.storage, FlatStorage)
    assert memory.storage.obs.shape == (100, 4) and memory.storage.obs.dtype == np.float32
    assert isinstance(memory.sampler, UniformSampler)
    assert memory.accumulator is None
    assert memory.gamma == SMALL.gamma


def test_make_replay_takes_sampler_and_n_step_from_the_config() -> None:
    config = SMALL.replace(prioritized=True, per_alpha=0.3, per_eps=0.01, n_step=4, num_envs=3)
    memory = make_replay(config, CARTPOLE)
    assert isinstance(memory.sampler, PrioritizedSampler)
    assert (memory.sampler.alpha, memory.sampler.eps) == (0.3, 0.01)
    assert memory.sampler.tree.capacity == 100
    assert memory.accumulator is not None
    assert (memory.accumulator.n, memory.accumulator.num_envs) == (4, 3)
    assert memory.accumulator.gamma == config.gamma


def test_make_replay_keeps_frames_once_only_where_the_spec_says_they_are_stacked() -> None:
    atari = EnvSpec("box", (4, 84, 84), "uint8", 6, frame_stack=4)
    assert isinstance(make_replay(SMALL, atari).storage, FrameStackStorage)
    # The same shape as channels (MinAtar-like images, or a stack the spec does not declare).
    channels = EnvSpec("box", (4, 84, 84), "uint8", 6)
    assert isinstance(make_replay(SMALL, channels).storage, FlatStorage)
    # One frame per observation: nothing to share between obs and its stack.
    single = EnvSpec("box", (1, 84, 84), "uint8", 6, frame_stack=1)
    assert isinstance(make_replay(SMALL, single).storage, FlatStorage)


def test_make_replay_stores_discrete_observations_as_indices() -> None:
    memory = make_replay(SMALL, EnvSpec("discrete", (16,), "int64", 4))
    assert isinstance(memory.storage, FlatStorage)
    assert memory.storage.obs.shape == (100,) and memory.storage.obs.dtype == np.int64


EPISODES = [  # rewards of each episode, and how it ends
    ([1.0, 2.0, 3.0, 4.0, 5.0], "terminated"),
    ([10.0, 20.0], "truncated"),
    ([7.0], "terminated"),
    ([1.0, -1.0, 1.0, -1.0], "truncated"),
]


def one_env_steps() -> list[tuple[np.ndarray, float, np.ndarray, bool, bool]]:
    """(obs, reward, next_obs, terminated, truncated) of EPISODES; obs = [episode, t]."""
    steps = []
    for e, (rewards, end) in enumerate(EPISODES):
        for t, r in enumerate(rewards):
            last = t == len(rewards) - 1
            obs = np.array([e, t], np.float32)
            nxt = np.array([e, t + 1], np.float32)
            steps.append((obs, r, nxt, last and end == "terminated", last and end == "truncated"))
    return steps


@pytest.mark.parametrize("n_step", [1, 3])
def test_add_one_stores_what_add_with_one_env_stores(n_step: int) -> None:
    """The single-env path (`add_one`) and the vector path (`add`, one env, with the masked
    reset steps of next-step autoreset) make the same n-step transitions."""
    single = make_memory(50, (2,), np.float32, 2, 0.5, n_step=n_step)
    vector = make_memory(50, (2,), np.float32, 2, 0.5, n_step=n_step)
    for obs, r, nxt, term, trunc in one_env_steps():
        single.add_one(obs, 1, r, nxt, term, trunc)
        vector.add(obs[None], np.array([1]), np.array([r]), nxt[None], [term], [trunc], [True])
        if term or trunc:  # the autoreset step: no transition
            zero = np.zeros((1, 2), np.float32)
            vector.add(zero, np.array([0]), np.array([0.0]), zero, [False], [False], [False])
    assert len(single) == len(vector) == 12
    for key, array in single.state_dict().items():
        np.testing.assert_array_equal(array, vector.state_dict()[key], err_msg=key)


def test_n_step_returns_through_add_one_hand_computed() -> None:
    memory = make_memory(50, (2,), np.float32, 2, 0.5, n_step=3)
    for obs, r, nxt, term, trunc in one_env_steps()[:7]:  # episodes 0 and 1
        memory.add_one(obs, 1, r, nxt, term, trunc)
    batch = memory.gather(np.arange(len(memory)))
    # Episode 0 (terminated at t = 5): windows of 3 until the end, then the rest cut there.
    # Episode 1 (truncated after 2 steps): both leave at its end and bootstrap.
    np.testing.assert_array_equal(batch.obs[:, 1], [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_allclose(
        batch.returns,
        [1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2 + 1.25, 4 + 2.5, 5, 10 + 10, 20],
    )
    np.testing.assert_allclose(batch.discounts, [0.125, 0.125, 0.125, 0.25, 0.5, 0.25, 0.5])
    np.testing.assert_array_equal(batch.terminated, [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(
        batch.next_obs, [[0, 3], [0, 4], [0, 5], [0, 5], [0, 5]] + [[1, 2]] * 2
    )


def test_reset_pending_drops_unfinished_windows() -> None:
    memory = make_memory(50, (2,), np.float32, 2, 0.5, n_step=3)
    steps = one_env_steps()
    for obs, r, nxt, term, trunc in steps[:2]:
        assert memory.add_one(obs, 1, r, nxt, term, trunc) == -1  # held back
    memory.reset_pending()
    for obs, r, nxt, term, trunc in steps[5:7]:  # episode 1 from its start
        memory.add_one(obs, 1, r, nxt, term, trunc)
    np.testing.assert_array_equal(memory.gather(np.arange(len(memory))).obs[:, 0], [1, 1])


def test_prioritized_sampler_is_told_of_frame_evictions() -> None:
    """Frame storage evicts transitions whose frames it reuses; their priority drops to 0."""
    shape = (2, 3, 3)
    memory = make_memory(
        30, shape, np.uint8, 3, 0.9, prioritized=True, stacked_frames=True, dedup_window=4
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.integers(0, 256, size=(3, *shape), dtype=np.uint8)
        memory.add(obs, np.zeros(3), np.zeros(3), obs, np.zeros(3, bool))
    assert isinstance(memory.storage, FrameStackStorage) and isinstance(
        memory.sampler, PrioritizedSampler
    )
    live = memory.storage.live_slots()
    assert len(live) < 30
    dead = np.setdiff1d(np.arange(30), live)
    np.testing.assert_array_equal(memory.sampler.tree.get(dead), 0.0)
    np.testing.assert_array_equal(memory.sampler.tree.get(live), 1.0)


# ---------------------------------------------------------------------- states of the old classes


def test_old_prioritized_frame_state_loads() -> None:
    """A PrioritizedFrameStackReplayBuffer state (commit c4af24c) loads into the composed
    memory: the same transitions, priorities and maximum come back, and it saves the same."""
    state = load_file(str(DATA / "per_frames_state.safetensors"))
    expected = load_file(str(DATA / "per_frames_expected.safetensors"))
    memory = make_memory(
        20,
        (4, 3, 2),
        np.uint8,
        3,
        0.9,
        prioritized=True,
        alpha=0.7,
        stacked_frames=True,
        dedup_window=16,
    )
    memory.load_state_dict(state)
    assert isinstance(memory.storage, FrameStackStorage) and isinstance(
        memory.sampler, PrioritizedSampler
    )
    batch = memory.gather(memory.storage.live_slots())
    for field in ("obs", "next_obs", "actions", "terminated", "discounts"):
        np.testing.assert_array_equal(getattr(batch, field), expected[field], err_msg=field)
    np.testing.assert_array_equal(batch.returns, expected["rewards"])
    np.testing.assert_array_equal(memory.sampler.tree.get(batch.indices), expected["priorities"])
    assert memory.sampler.tree.max_priority == state["replay.max_priority"][0]
    saved = memory.state_dict()
    assert saved.keys() == state.keys()
    for key, array in state.items():
        np.testing.assert_array_equal(saved[key], array, err_msg=key)


def test_old_checkpoint_with_prioritized_n_step_replay_loads_and_trains() -> None:
    """A DQN checkpoint with its replay, written at commit c4af24c (prioritized, n_step = 3,
    CartPole): the memory restores every array, and training continues from it."""
    path = DATA / "per_nstep_cartpole"
    state = load_file(str(path / "replay.safetensors"))
    agent = DQN.load(path, with_replay=True)
    memory = agent.learner.replay
    assert len(memory) == 200 and isinstance(memory.sampler, PrioritizedSampler)
    saved = memory.state_dict()
    assert saved.keys() == state.keys()
    for key, array in state.items():
        np.testing.assert_array_equal(saved[key], array, err_msg=key)
    steps = agent.counters.step
    agent.learn(50)
    assert agent.counters.step == steps + 50
