"""`ReplayMemory`: a storage, a sampler and an n-step accumulator, assembled by `make_replay`.

After Dopamine's replay memory, each part does one job:

    env step --add/add_one--> NStepAccumulator (n > 1) --finished transitions--> Storage
                                                                        |  on_add / on_evict
    learner <--Batch-- gather <--slots, weights-- Sampler <-------------+
    learner --update_priorities(slots, td_errors)--> Sampler

- Storage: `FlatStorage` (obs and next_obs whole) or `FrameStackStorage` (stacked frames kept
  once, for Atari).
- Sampler: `UniformSampler` or `PrioritizedSampler` (sum tree).
- n-step: an `NStepAccumulator` with one window per env, present when n_step > 1.

Loop drivers add raw one-step transitions (`add_one` for one env, `add` for a vector env); the
memory turns them into n-step ones where configured, so n-step works with either driver.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec, ObsEncoder
from qlearn.errors import TrainingError
from qlearn.replay.frames import DEDUP_WINDOW, FrameStackStorage, estimate_frame_bytes
from qlearn.replay.nstep import NStepAccumulator
from qlearn.replay.sampler import PrioritizedSampler, Sampler, UniformSampler
from qlearn.replay.storage import FlatStorage, Rows, Storage, check_fits, estimate_bytes
from qlearn.replay.sum_tree import SumTree


@dataclasses.dataclass
class Batch:
    """A sampled mini-batch; leading dimension is the batch.

    `returns` are n-step returns Σ_{i<k} γ^i r_{t+i} (the reward when k = 1) and `discounts`
    γ^k for a k-step transition, so the TD target is
    `returns + discounts * (1 - terminated) * V(next_obs)`. `weights` are importance weights
    (ones under uniform sampling); `indices` locate the samples for priority updates.
    """

    obs: np.ndarray  # (batch, *obs_shape)
    actions: np.ndarray  # (batch,) int64
    returns: np.ndarray  # (batch,) float32
    next_obs: np.ndarray  # (batch, *obs_shape)
    terminated: np.ndarray  # (batch,) float32 in {0, 1}
    discounts: np.ndarray  # (batch,) float32
    weights: np.ndarray  # (batch,) float32
    indices: np.ndarray  # (batch,) int64


class ReplayMemory:
    """Stores transitions and samples mini-batches; what the learner and the loop use.

    Args:
        storage: where transitions live.
        sampler: which slots a mini-batch draws; wired to the storage's evictions here.
        gamma: discount, for `discounts = gamma ** steps`.
        accumulator: turns raw one-step transitions into n-step ones; None adds them as they
            are (n = 1).
    """

    def __init__(
        self,
        storage: Storage,
        sampler: Sampler,
        gamma: float,
        accumulator: NStepAccumulator | None = None,
    ) -> None:
        self.storage = storage
        self.sampler = sampler
        self.gamma = gamma
        self.accumulator = accumulator
        storage.evict_hook = sampler.on_evict
        # Bound once: `add_one` runs at every env step of the single-env loop.
        self._store_one = storage.add_one
        self._on_add_one = sampler.on_add_one
        # gamma**k for k = 0..255, looked up by the stored step count (uint8).
        self._discount_table = (gamma ** np.arange(256)).astype(np.float32)

    def __len__(self) -> int:
        return self.storage.size

    @property
    def capacity(self) -> int:
        return self.storage.capacity

    @property
    def nbytes(self) -> int:
        """Bytes of the storage's arrays and the sampler's."""
        return self.storage.nbytes + self.sampler.nbytes

    # ------------------------------------------------------------------ adding
    def add_one(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool = False,
    ) -> int:
        """Add one env step of a single env (no env dimension): the loop's fast path.

        Args:
            obs: (*obs_shape) observation the action was taken in.
            action: the action.
            reward: its reward (already clipped, where configured).
            next_obs: (*obs_shape) observation after the step; at an episode's end the real
                final observation, not the reset one.
            terminated: whether the episode terminated (no bootstrap).
            truncated: whether it was truncated (bootstraps); it ends the n-step windows.

        Returns:
            The slot of the last transition stored, or -1 when the n-step accumulator held the
            step back.
        """
        if self.accumulator is None:
            slot = self._store_one(obs, action, reward, next_obs, terminated)
            self._on_add_one(slot)
            return slot
        out = self.accumulator.push_one(obs, action, reward, next_obs, terminated, truncated)
        if out is None:
            return -1
        return int(self.add_transitions(*out.as_add_args())[-1])

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Add one step of a vector env: one raw one-step transition per env.

        Args:
            obs: (num_envs, *obs_shape) observations the actions were taken in.
            actions: (num_envs,) actions.
            rewards: (num_envs,) rewards (already clipped, where configured).
            next_obs: (num_envs, *obs_shape) observations after the step; at an episode's end
                the real final observation.
            terminated: (num_envs,) bool.
            truncated: (num_envs,) bool; None means none was. It ends the n-step windows.
            mask: (num_envs,) bool, False for an env whose step made no transition (the reset
                step of next-step autoreset); None means all True.

        Returns:
            (k,) int64 slots of the transitions stored (k = 0 when the accumulator held them).
        """
        if self.accumulator is not None:
            if truncated is None:
                truncated = np.zeros(len(actions), dtype=np.bool_)
            out = self.accumulator.push(
                obs, actions, rewards, next_obs, terminated, truncated, mask
            )
            if out is None:
                return np.zeros(0, dtype=np.int64)
            return self.add_transitions(*out.as_add_args())
        if mask is not None:
            mask = np.asarray(mask, dtype=np.bool_)
            if not mask.all():
                if not mask.any():
                    return np.zeros(0, dtype=np.int64)
                obs, actions, rewards = obs[mask], actions[mask], rewards[mask]
                next_obs, terminated = next_obs[mask], terminated[mask]
        return self.add_transitions(obs, actions, rewards, next_obs, terminated)

    def add_transitions(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        returns: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        steps: np.ndarray | int = 1,
    ) -> np.ndarray:
        """Store finished transitions as they are, bypassing the accumulator.

        Args:
            obs: (k, *obs_shape) first observations.
            actions: (k,) actions.
            returns: (k,) rewards, or n-step returns where `steps` > 1.
            next_obs: (k, *obs_shape) observations `steps` steps later.
            terminated: (k,) bool; cuts the bootstrap.
            steps: (k,) or one int in [1, 255]: env steps each transition spans.

        Returns:
            (k,) int64 slots written, in the order of the rows.
        """
        slots = self.storage.add(Rows(obs, actions, returns, next_obs, terminated, steps))
        self.sampler.on_add(slots)
        return slots

    def reset_pending(self) -> None:
        """Drop the n-step windows of unfinished episodes; call it when the envs are reset
        outside an episode's end (a new `learn` call, a resume), whose windows can never
        complete. At most n - 1 transitions per env are lost."""
        if self.accumulator is not None:
            self.accumulator.reset()

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> Batch:
        """Draw `batch_size` transitions as the sampler chooses.

        Args:
            batch_size: transitions to draw (with replacement).
            rng: the generator all replay randomness comes from.
            beta: importance-weight exponent in [0, 1] for prioritized sampling; ignored by
                uniform sampling.
        """
        if self.storage.size == 0:
            raise TrainingError("cannot sample from an empty replay buffer")
        slots, weights = self.sampler.sample(batch_size, rng, self.storage, beta)
        return self.gather(slots, weights)

    def gather(self, slots: np.ndarray, weights: np.ndarray | None = None) -> Batch:
        """The transitions at `slots` as a Batch (unit weights unless given)."""
        rows = self.storage.gather(slots)
        return Batch(
            obs=rows.obs,
            actions=rows.actions,
            returns=rows.returns,
            next_obs=rows.next_obs,
            terminated=rows.terminated,
            discounts=self._discount_table[rows.steps],
            weights=np.ones(len(slots), dtype=np.float32) if weights is None else weights,
            indices=slots,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Pass a batch's TD errors to the sampler (a no-op under uniform sampling).

        Slots whose transition has left the storage since it was sampled are skipped, so an
        evicted transition is never drawn again.

        Args:
            indices: (batch,) slots, as in `Batch.indices`.
            td_errors: (batch,) TD errors (or per-sample distributional losses), finite.
        """
        indices = np.asarray(indices, dtype=np.int64)
        live = self.storage.is_live(indices)
        if not live.all():
            indices, td_errors = indices[live], np.asarray(td_errors)[live]
        self.sampler.update_priorities(indices, td_errors)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """The storage's arrays and the sampler's, under `replay.*` keys (the n-step windows of
        unfinished episodes are not saved: a resumed run starts new episodes)."""
        return {
            **self.storage.state_dict(),
            **self.sampler.state_dict(self.storage.state_slots()),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` (of this class, or of the replay buffers before it, whose
        keys and layout are the same) produced."""
        self.sampler.check_state(state)  # before anything changes
        self.storage.load_state_dict(state)
        self.sampler.load_state_dict(state, self.storage.size)
        self.reset_pending()


def estimate_replay_bytes(
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | str,
    num_actions: int,
    *,
    prioritized: bool = False,
    stacked_frames: bool = False,
    dedup_window: int = DEDUP_WINDOW,
) -> int:
    """Bytes `make_memory` allocates for these arguments: storage, plus the sum tree."""
    if stacked_frames:
        stored = estimate_frame_bytes(capacity, obs_shape, obs_dtype, num_actions, dedup_window)
    else:
        stored = estimate_bytes(capacity, obs_shape, obs_dtype, num_actions)
    return stored + (SumTree.bytes_for(capacity) if prioritized else 0)


def make_memory(
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | str,
    num_actions: int,
    gamma: float,
    *,
    prioritized: bool = False,
    alpha: float = 0.6,
    eps: float = 1e-6,
    stacked_frames: bool = False,
    dedup_window: int = DEDUP_WINDOW,
    n_step: int = 1,
    num_envs: int = 1,
) -> ReplayMemory:
    """A ReplayMemory from explicit parts' settings (`make_replay` reads them from a config).

    Args:
        capacity: transitions kept.
        obs_shape: one observation as stored; (stack, *frame) with `stacked_frames`.
        obs_dtype: its dtype.
        num_actions: size of the action set.
        gamma: discount.
        prioritized: prioritized sampling (else uniform), with exponent `alpha` and `eps`.
        alpha: see `PrioritizedSampler`.
        eps: see `PrioritizedSampler`.
        stacked_frames: keep each frame of stacked observations once (`FrameStackStorage`).
        dedup_window: see `FrameStackStorage`.
        n_step: steps per transition; > 1 adds an n-step accumulator.
        num_envs: envs the accumulator keeps windows for.
    """
    what = "prioritized " if prioritized else ""
    what += "frame-stack replay buffer" if stacked_frames else "replay buffer"
    # One check of the whole, before any part is allocated.
    check_fits(
        estimate_replay_bytes(
            capacity,
            obs_shape,
            obs_dtype,
            num_actions,
            prioritized=prioritized,
            stacked_frames=stacked_frames,
            dedup_window=dedup_window,
        ),
        what,
    )
    accumulator = NStepAccumulator(n_step, gamma, num_envs) if n_step > 1 else None
    sampler: Sampler = (
        PrioritizedSampler(capacity, alpha=alpha, eps=eps) if prioritized else UniformSampler()
    )
    storage: Storage
    if stacked_frames:
        storage = FrameStackStorage(
            capacity, obs_shape, obs_dtype, num_actions, dedup_window=dedup_window
        )
    else:
        storage = FlatStorage(capacity, obs_shape, obs_dtype, num_actions)
    return ReplayMemory(storage, sampler, gamma, accumulator)


def stores_stacked_frames(spec: EnvSpec) -> bool:
    """Whether `spec`'s observations are stacks of more than one frame along their first axis,
    which `FrameStackStorage` keeps once each."""
    return (
        spec.frame_stack > 1 and len(spec.obs_shape) >= 2 and spec.obs_shape[0] == spec.frame_stack
    )


def make_replay(config: DQNConfig, spec: EnvSpec) -> ReplayMemory:
    """The replay memory `config` describes for an env of `spec`.

    Storage: frames kept once where the spec says observations are stacked frames (Atari: ~7 KB
    a transition instead of 56 KB), else whole observations. Sampler: prioritized when
    `config.prioritized`, else uniform. An n-step accumulator with `config.num_envs` windows
    when `config.n_step` > 1. A memory too big for the machine is refused (TrainingError, with
    both numbers) before anything is allocated.
    """
    obs_shape, obs_dtype = ObsEncoder(spec).storage()
    return make_memory(
        config.buffer_size,
        obs_shape,
        obs_dtype,
        spec.num_actions,
        config.gamma,
        prioritized=config.prioritized,
        alpha=config.per_alpha,
        eps=config.per_eps,
        stacked_frames=stores_stacked_frames(spec),
        n_step=config.n_step,
        num_envs=config.num_envs,
    )
