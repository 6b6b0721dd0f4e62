"""FrameStackStorage: stacks come back exactly as the env produced them.

The oracle is a replay memory on FlatStorage fed the same rows: it stores every obs and next_obs
whole, so the frame memory must return identical arrays for every stored transition.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qlearn.errors import CheckpointError, TrainingError
from qlearn.replay import (
    FrameStackStorage,
    NStepAccumulator,
    PrioritizedSampler,
    ReplayMemory,
    estimate_frame_bytes,
    make_memory,
)
from qlearn.replay.frames import num_frame_slots

FRAME = (6, 5)
STACK = 4


class TaggedFrames(gym.Env):
    """Frames that name their env, episode and step; episodes of random length 1..max_len.

    Pixel [0, 0] is env_id + 1 (never 0, so zero padding is told apart), [0, 1] the episode,
    [0, 2] and [0, 3] the step. Odd episodes end by truncation, even ones by termination.
    """

    def __init__(self, env_id: int = 0, max_len: int = 12) -> None:
        self.env_id = env_id
        self.max_len = max_len
        self.observation_space = gym.spaces.Box(0, 255, FRAME, np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.episode = -1
        self.t = 0
        self.length = 1
        self.rng = np.random.default_rng(env_id)

    def _frame(self) -> np.ndarray:
        frame = np.zeros(FRAME, np.uint8)
        frame[0, :4] = (self.env_id + 1, self.episode % 256, self.t % 256, self.t // 256)
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.rng.integers(1, self.max_len + 1))
        return self._frame(), {}

    def step(self, action: int):
        self.t += 1
        done = self.t >= self.length
        terminated = done and self.episode % 2 == 0
        truncated = done and not terminated
        return self._frame(), float(self.t), terminated, truncated, {}


def stacked_vector_env(
    num_envs: int, padding_type: str = "reset", max_len: int = 12
) -> gym.vector.SyncVectorEnv:
    def factory(i: int):
        return lambda: gym.wrappers.FrameStackObservation(
            TaggedFrames(i, max_len), STACK, padding_type=padding_type
        )

    return gym.vector.SyncVectorEnv([factory(i) for i in range(num_envs)])


def drive(
    buffers: list,
    num_envs: int,
    num_steps: int,
    *,
    padding_type: str = "reset",
    n_step: int = 1,
    max_len: int = 12,
) -> None:
    """Step a vector env like the training loop does and add the same rows to every buffer."""
    envs = stacked_vector_env(num_envs, padding_type, max_len)
    rng = np.random.default_rng(0)
    nstep = NStepAccumulator(n_step, 0.9, num_envs)
    obs, _ = envs.reset(seed=0)
    prev_done = np.zeros(num_envs, dtype=bool)
    for _ in range(num_steps):
        actions = rng.integers(0, 3, size=num_envs)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        out = nstep.push(obs, actions, rewards, next_obs, terminated, truncated, ~prev_done)
        if out is not None:
            for buffer in buffers:
                buffer.add_transitions(*out.as_add_args())
        prev_done = terminated | truncated
        obs = next_obs
    envs.close()


def frame_memory(capacity: int, num_actions: int = 3, **kwargs) -> ReplayMemory:
    """A memory on FrameStackStorage (uniform unless kwargs say prioritized)."""
    shape = (STACK, *FRAME)
    return make_memory(capacity, shape, np.uint8, num_actions, 0.9, stacked_frames=True, **kwargs)


def flat_memory(capacity: int, num_actions: int = 3) -> ReplayMemory:
    return make_memory(capacity, (STACK, *FRAME), np.uint8, num_actions, 0.9)


def storage_of(memory: ReplayMemory) -> FrameStackStorage:
    assert isinstance(memory.storage, FrameStackStorage)
    return memory.storage


def tree_of(memory: ReplayMemory):
    assert isinstance(memory.sampler, PrioritizedSampler)
    return memory.sampler.tree


def make_pair(capacity: int, num_actions: int = 3) -> tuple[ReplayMemory, ReplayMemory]:
    return frame_memory(capacity, num_actions), flat_memory(capacity, num_actions)


def live(memory: ReplayMemory) -> np.ndarray:
    return storage_of(memory).live_slots()


def assert_same_transitions(frames: ReplayMemory, oracle: ReplayMemory) -> None:
    assert len(frames) == len(oracle)
    slots = np.sort(live(frames))
    np.testing.assert_array_equal(slots, np.arange(len(oracle)))
    got, want = frames.gather(slots), oracle.gather(slots)
    assert got.obs.dtype == np.uint8 and got.obs.shape == (len(slots), STACK, *FRAME)
    for field in ("obs", "next_obs", "actions", "returns", "terminated", "discounts"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


@pytest.mark.parametrize("padding_type", ["reset", "zero"])
def test_stacks_equal_the_env_stacks_across_episodes_and_wraparound(padding_type: str) -> None:
    frames, oracle = make_pair(64)
    drive([frames, oracle], num_envs=1, num_steps=500, padding_type=padding_type)
    assert storage_of(frames).tail != 0  # the ring wrapped
    assert_same_transitions(frames, oracle)


def test_interleaved_vector_envs_keep_their_own_frames() -> None:
    frames, oracle = make_pair(100)
    drive([frames, oracle], num_envs=3, num_steps=300)
    assert_same_transitions(frames, oracle)
    # Every frame of a stack comes from the same env and episode as its newest frame.
    batch = frames.gather(live(frames))
    for stacks in (batch.obs, batch.next_obs):
        tags = stacks[:, :, 0, :2]  # (batch, stack, 2): env and episode
        np.testing.assert_array_equal(tags, np.broadcast_to(tags[:, -1:], tags.shape))


def test_first_stack_of_an_episode_is_padded_like_frame_stack_observation() -> None:
    frames, _ = make_pair(200)
    drive([frames], num_envs=2, num_steps=150, padding_type="zero")
    batch = frames.gather(live(frames))
    first = batch.obs[:, -1, 0, 2] == 0  # newest frame at step 0: the reset observation
    assert first.any()
    # Zero padding: the three older frames are all zeros, not the previous episode's frames.
    assert not batch.obs[first, :-1].any()


def test_n_step_transitions_from_several_envs() -> None:
    frames, oracle = make_pair(80)
    drive([frames, oracle], num_envs=2, num_steps=300, n_step=3)
    assert_same_transitions(frames, oracle)
    assert set(np.unique(storage_of(frames).steps[live(frames)])) == {1, 2, 3}


def test_about_one_frame_is_stored_per_transition() -> None:
    frames, _ = make_pair(1_000)
    drive([frames], num_envs=1, num_steps=600, max_len=50)
    episodes = len(frames) / 25  # mean episode length is about 25
    # One new frame per transition, one more per episode (the reset frame).
    assert storage_of(frames).num_frames_written <= len(frames) + 1.5 * episodes


def test_add_one_matches_add() -> None:
    a, b = make_pair(20)
    rng = np.random.default_rng(1)
    for _ in range(30):
        obs = rng.integers(0, 4, size=(STACK, *FRAME), dtype=np.uint8)
        next_obs = np.concatenate([obs[1:], rng.integers(0, 4, size=(1, *FRAME), dtype=np.uint8)])
        a.add_one(obs, 2, 1.5, next_obs, True)
        b.add(obs[None], np.array([2]), np.array([1.5]), next_obs[None], np.array([True]))
    assert_same_transitions(a, b)


def test_frames_without_matches_are_still_exact() -> None:
    """Random stacks share no frames: every row costs 2 * stack frames, and the oldest
    transitions leave early to free frame slots, but what remains is exact."""
    shape = (STACK, *FRAME)
    frames = frame_memory(50, dedup_window=8)
    oracle = flat_memory(500)
    rng = np.random.default_rng(2)
    for _ in range(40):
        obs = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
        next_obs = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
        args = (obs, rng.integers(0, 3, size=5), rng.random(5), next_obs, rng.random(5) < 0.5)
        frames.add(*args)
        oracle.add(*args)
    assert 0 < len(frames) < 50  # evicted early: 8 frames per row
    assert len(frames) * 2 * STACK <= storage_of(frames).num_frame_slots
    got = frames.gather(live(frames))
    want = oracle.gather(np.arange(len(oracle) - len(frames), len(oracle)))
    np.testing.assert_array_equal(got.obs, want.obs)
    np.testing.assert_array_equal(got.next_obs, want.next_obs)
    np.testing.assert_array_equal(got.returns, want.returns)


def test_sample_draws_only_live_transitions() -> None:
    frames, _ = make_pair(30)
    drive([frames], num_envs=1, num_steps=100)
    batch = frames.sample(2_000, np.random.default_rng(0))
    assert set(batch.indices.tolist()) == set(range(30))
    assert batch.obs.shape == (2_000, STACK, *FRAME) and batch.obs.dtype == np.uint8
    with pytest.raises(TrainingError, match="empty"):
        make_pair(4)[0].sample(1, np.random.default_rng(0))


def test_state_dict_round_trip_then_keep_adding() -> None:
    frames, oracle = make_pair(64)
    drive([frames, oracle], num_envs=2, num_steps=200)
    restored = frame_memory(64)
    state = frames.state_dict()
    assert len(state["replay.frames"]) < len(frames) + 2 * STACK * 20  # only frames in use
    restored.load_state_dict(state)
    before = frames.gather(live(frames))
    after = restored.gather(live(restored))
    for field in ("obs", "next_obs", "actions", "returns", "terminated", "discounts"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))
    obs = after.next_obs[-1:]
    restored.add(obs, np.array([1]), np.array([0.5]), obs, np.array([False]))
    last = np.array([storage_of(restored).pos - 1])
    np.testing.assert_array_equal(restored.gather(last).obs, obs)


def test_loading_a_whole_observation_checkpoint_is_refused() -> None:
    frames, oracle = make_pair(8)
    with pytest.raises(CheckpointError, match=r"replay\.frames"):
        frames.load_state_dict(oracle.state_dict())


def test_estimate_matches_allocation_and_atari_scale() -> None:
    shape = (STACK, *FRAME)
    frames = make_memory(300, shape, np.uint8, 6, 0.99, stacked_frames=True)
    assert frames.nbytes == estimate_frame_bytes(300, shape, np.uint8, 6)
    # 1M Atari transitions: one 84x84 frame each plus slack, under 8 GB (the naive layout: 56 GB).
    atari = estimate_frame_bytes(1_000_000, (4, 84, 84), np.uint8, 18)
    assert num_frame_slots(1_000_000, 4) * 84 * 84 < atari < 8e9


def test_a_buffer_larger_than_memory_is_refused_with_both_numbers() -> None:
    with pytest.raises(TrainingError, match=r"needs [\d.]+ GiB but only [\d.]+ GiB"):
        make_memory(10**10, (4, 84, 84), np.uint8, 6, 0.99, stacked_frames=True)
    with pytest.raises(TrainingError, match=r"needs [\d.]+ GiB but only [\d.]+ GiB"):
        FrameStackStorage(10**10, (4, 84, 84), np.uint8, 6)


def test_prioritized_sampling_updates_and_round_trip() -> None:
    per = frame_memory(40, prioritized=True, alpha=1.0)
    oracle = flat_memory(40)
    drive([per, oracle], num_envs=2, num_steps=120)
    assert_same_transitions(per, oracle)
    rng = np.random.default_rng(0)
    batch = per.sample(32, rng, beta=1.0)
    assert batch.weights.max() == pytest.approx(1.0)
    # Make one transition dominate: it is drawn almost every time.
    per.update_priorities(live(per), np.full(len(per), 1e-6))
    favourite = int(live(per)[5])
    per.update_priorities(np.array([favourite]), np.array([1e3]))
    drawn = per.sample(256, rng, beta=0.5).indices
    assert np.mean(drawn == favourite) > 0.95
    restored = frame_memory(40, prioritized=True, alpha=1.0)
    restored.load_state_dict(per.state_dict())
    np.testing.assert_allclose(tree_of(restored).get(live(restored)), tree_of(per).get(live(per)))


def test_prioritized_never_samples_evicted_transitions() -> None:
    shape = (STACK, *FRAME)
    per = frame_memory(50, prioritized=True, dedup_window=8)
    rng = np.random.default_rng(3)
    for _ in range(40):
        obs = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
        per.add(obs, np.zeros(5), np.zeros(5), obs, np.zeros(5, bool))
    slots = set(live(per).tolist())
    assert len(slots) < 50
    assert set(per.sample(500, rng).indices.tolist()) <= slots
    # Evicted slots hold priority 0, so the tree's mass is the live transitions' alone.
    tree = tree_of(per)
    assert tree.total() == pytest.approx(float(tree.get(live(per)).sum()))
