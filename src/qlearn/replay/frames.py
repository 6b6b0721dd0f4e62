"""Replay for stacked image observations that keeps each distinct frame once, as uint8.

An Atari observation is a stack of the last 4 grey 84x84 frames, and consecutive observations
share 3 of them; storing `obs` and `next_obs` whole costs 8 frames (56 KB) per transition, while
only one of them is new. `FrameStackStorage` stores frames in one ring and keeps, per
transition, the ring slots of the `stack` frames of `obs` and of `next_obs`; gathering rebuilds
the stacks. About one frame (7 KB) per transition remains.

Frames are found again by content (a hash of their bytes, confirmed byte for byte) among those
written in the last `dedup_window` frames. So the buffer needs no env ids and no episode flags:
rows from interleaved vector envs, n-step transitions, and whatever an env pads a new episode's
stack with (Gymnasium's `FrameStackObservation` repeats the reset frame by default,
`padding_type="zero"` pads with zeros) all come back exactly as they were added, and a stack
never mixes in frames from another episode or env, because each stack is kept as the frames it
actually held. A missed match only costs memory, never correctness.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.replay.storage import STATE_PREFIX, Rows, action_dtype, check_fits, check_state_size

DEDUP_WINDOW = 1_024
"""Default number of most recent frames searched for a match (covers 64 envs with n_step = 10)."""

_REF_DTYPE = np.dtype(np.int32)  # frame slots; num_frame_slots stays far below 2**31


def num_frame_slots(capacity: int, stack: int, dedup_window: int = DEDUP_WINDOW) -> int:
    """Frames the ring holds for `capacity` transitions.

    One frame per transition, 1/32 more for the first frames of episodes (an episode adds one
    frame beyond its transitions under reset padding), the dedup window, and one row's frames.
    If episodes are so short that this runs out, the oldest transitions leave early.
    """
    return capacity + math.ceil(capacity / 32) + dedup_window + 2 * stack


def estimate_frame_bytes(
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | str,
    num_actions: int,
    dedup_window: int = DEDUP_WINDOW,
) -> int:
    """Bytes a FrameStackStorage allocates for `capacity` transitions of `obs_shape`.

    Args:
        capacity: transitions kept.
        obs_shape: (stack, *frame_shape), e.g. (4, 84, 84).
        obs_dtype: dtype of the frames (uint8 for Atari).
        num_actions: size of the action set (picks the action dtype).
        dedup_window: see `FrameStackStorage`.
    """
    stack, frame_shape = _split_shape(obs_shape)
    frame_bytes = math.prod(frame_shape) * np.dtype(obs_dtype).itemsize
    frames = num_frame_slots(capacity, stack, dedup_window) * frame_bytes
    # Per transition: the frame slots of obs and next_obs, action, reward (f4), terminated (1),
    # steps (1), written_at (i8).
    per = 2 * stack * _REF_DTYPE.itemsize + action_dtype(num_actions).itemsize + 4 + 1 + 1 + 8
    return frames + capacity * per


def _split_shape(obs_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    if len(obs_shape) < 2 or obs_shape[0] < 1:
        raise ConfigError(
            f"obs_shape = {obs_shape!r} is invalid for frame storage; allowed: (stack, *frame), "
            "e.g. (4, 84, 84)"
        )
    return int(obs_shape[0]), tuple(int(x) for x in obs_shape[1:])


class FrameStackStorage:
    """A `Storage` of transitions whose stacked observations share their frames.

    Gathered `obs` and `next_obs` are (rows, stack, *frame) arrays equal, byte for byte, to the
    ones added. Transitions live in a ring of slots from `tail` (the oldest) on; when a frame
    slot must be reused, the transitions that may still use it leave early, through
    `evict_hook`.

    Args:
        capacity: transitions kept; the oldest are overwritten.
        obs_shape: (stack, *frame_shape), e.g. (4, 84, 84).
        obs_dtype: the observations' dtype, normally uint8.
        num_actions: size of the action set.
        dedup_window: how many of the most recent frames a new frame is matched against. It must
            cover the frames written between an env's two uses of one frame: about
            (stack + n_step) * num_envs. Larger costs `dedup_window` frames of memory.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str,
        num_actions: int,
        *,
        dedup_window: int = DEDUP_WINDOW,
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"buffer_size = {capacity!r} is invalid; allowed: >= 1")
        if dedup_window < 0:
            raise ConfigError(f"dedup_window = {dedup_window!r} is invalid; allowed: >= 0")
        self.stack, self.frame_shape = _split_shape(tuple(obs_shape))
        check_fits(
            estimate_frame_bytes(capacity, obs_shape, obs_dtype, num_actions, dedup_window),
            "frame-stack replay buffer",
        )
        self.capacity = capacity
        self.dedup_window = dedup_window
        self.num_frame_slots = num_frame_slots(capacity, self.stack, dedup_window)
        self.frames = np.zeros((self.num_frame_slots, *self.frame_shape), dtype=obs_dtype)
        self.obs_refs = np.zeros((capacity, self.stack), dtype=_REF_DTYPE)  # frame slots
        self.next_refs = np.zeros((capacity, self.stack), dtype=_REF_DTYPE)
        self.actions = np.zeros(capacity, dtype=action_dtype(num_actions))
        self.returns = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.steps = np.ones(capacity, dtype=np.uint8)
        # Frame count when the transition was written: all its frames are at least
        # written_at - dedup_window, which tells when overwriting a frame must evict it.
        self.written_at = np.zeros(capacity, dtype=np.int64)
        self.tail = 0  # slot of the oldest transition
        self.size = 0
        self.num_frames_written = 0  # frame k lives in slot k % num_frame_slots
        self._recent: dict[int, int] = {}  # hash of a frame's bytes -> its frame number
        self._recent_order: deque[tuple[int, int]] = deque()
        self.evict_hook: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def pos(self) -> int:
        """Slot the next transition goes to."""
        return (self.tail + self.size) % self.capacity

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values()) + self.frames.nbytes

    def _arrays(self) -> dict[str, np.ndarray]:
        """Per-transition arrays by checkpoint key (`rewards`, the old name of `returns`, keeps
        older checkpoints loading)."""
        return {
            "obs_refs": self.obs_refs,
            "next_refs": self.next_refs,
            "actions": self.actions,
            "rewards": self.returns,
            "terminated": self.terminated,
            "steps": self.steps,
            "written_at": self.written_at,
        }

    def live_slots(self) -> np.ndarray:
        """Slots of the stored transitions, oldest first; (len(self),) int64."""
        return (self.tail + np.arange(self.size)) % self.capacity

    # ------------------------------------------------------------------ adding
    def _frame_slot(self, frame: np.ndarray, oldest: int) -> int:
        """Slot of a frame equal to `frame` numbered >= `oldest`, writing it if there is none."""
        data = frame.tobytes()
        key = hash(data)
        number = self._recent.get(key)
        if number is not None and number >= oldest:
            slot = number % self.num_frame_slots
            if self.frames[slot].tobytes() == data:
                return slot
        number = self.num_frames_written
        slot = number % self.num_frame_slots
        if number >= self.num_frame_slots:
            self._evict_referencing(number - self.num_frame_slots)
        self.frames[slot] = frame
        self.num_frames_written = number + 1
        self._recent[key] = number
        order = self._recent_order
        order.append((key, number))
        while order[0][1] < number - self.dedup_window:
            old_key, old_number = order.popleft()
            if self._recent.get(old_key) == old_number:
                del self._recent[old_key]
        return slot

    def _evict_referencing(self, overwritten: int) -> None:
        """Drop the oldest transitions while they may use frame number `overwritten`."""
        while self.size and self.written_at[self.tail] - self.dedup_window <= overwritten:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        if self.evict_hook is not None:
            self.evict_hook(self.tail)
        self.tail = (self.tail + 1) % self.capacity
        self.size -= 1

    def _add_row(
        self,
        obs: np.ndarray,
        action: int,
        ret: float,
        next_obs: np.ndarray,
        terminated: bool,
        steps: int,
    ) -> int:
        start = self.num_frames_written
        oldest = start - self.dedup_window
        obs_slots = [self._frame_slot(frame, oldest) for frame in obs]
        next_slots = [self._frame_slot(frame, oldest) for frame in next_obs]
        if self.size == self.capacity:
            self._drop_oldest()
        i = self.pos
        self.size += 1
        self.obs_refs[i] = obs_slots
        self.next_refs[i] = next_slots
        self.actions[i] = action
        self.returns[i] = ret
        self.terminated[i] = terminated
        self.steps[i] = steps
        self.written_at[i] = start
        return i

    def _check_obs(self, name: str, obs: np.ndarray, rows: int) -> None:
        expected = (rows, self.stack, *self.frame_shape)
        if obs.shape != expected:
            raise TrainingError(
                f"{name} has shape {obs.shape}; allowed: {expected} (rows, stack, *frame)"
            )

    def add(self, rows: Rows) -> np.ndarray:
        """Store rows (one transition each) and return their (n,) int64 slots, in row order.

        `rows.obs` and `rows.next_obs` are (n, stack, *frame); `rows.steps` is (n,) or one int
        in [1, 255].
        """
        obs = np.asarray(rows.obs)
        next_obs = np.asarray(rows.next_obs)
        actions, returns, terminated = rows.actions, rows.returns, rows.terminated
        n = len(actions)
        self._check_obs("obs", obs, n)
        self._check_obs("next_obs", next_obs, n)
        steps_array = np.broadcast_to(np.asarray(rows.steps, dtype=np.int64), (n,))
        slots = np.empty(n, dtype=np.int64)
        for row in range(n):
            slots[row] = self._add_row(
                obs[row],
                int(actions[row]),
                float(returns[row]),
                next_obs[row],
                bool(terminated[row]),
                int(steps_array[row]),
            )
        return slots

    def add_one(
        self, obs: np.ndarray, action: int, ret: float, next_obs: np.ndarray, terminated: bool
    ) -> int:
        """Store one 1-step transition; obs and next_obs are (stack, *frame)."""
        obs = np.asarray(obs)
        next_obs = np.asarray(next_obs)
        self._check_obs("obs", obs[None], 1)
        self._check_obs("next_obs", next_obs[None], 1)
        return self._add_row(obs, int(action), float(ret), next_obs, bool(terminated), 1)

    # ------------------------------------------------------------------ reading
    def gather(self, slots: np.ndarray) -> Rows:
        """The transitions at `slots`, stacks rebuilt: obs is (rows, stack, *frame)."""
        return Rows(
            self.frames[self.obs_refs[slots]],
            self.actions[slots].astype(np.int64),
            self.returns[slots],
            self.frames[self.next_refs[slots]],
            self.terminated[slots].astype(np.float32),
            self.steps[slots],
        )

    def slots_at(self, positions: np.ndarray) -> np.ndarray:
        """Slots of the transitions `positions` places after the oldest."""
        return (self.tail + positions) % self.capacity

    def is_live(self, slots: np.ndarray) -> np.ndarray:
        return (np.asarray(slots, dtype=np.int64) - self.tail) % self.capacity < self.size

    def state_slots(self) -> np.ndarray:
        """The live slots oldest first, as `state_dict` saves them."""
        return self.live_slots()

    # ------------------------------------------------------------------ state
    def _frame_number(self, slots: np.ndarray) -> np.ndarray:
        """Frame numbers of frame `slots` in use: each is one of the last num_frame_slots."""
        last = self.num_frames_written - 1
        return last - (last - slots.astype(np.int64)) % self.num_frame_slots

    def state_dict(self) -> dict[str, np.ndarray]:
        """The live transitions oldest first, and the frames they use, renumbered from 0."""
        live = self.live_slots()
        out = {f"{STATE_PREFIX}{k}": v[live] for k, v in self._arrays().items()}
        if self.size:
            first = int(
                min(
                    self._frame_number(self.obs_refs[live]).min(),
                    self._frame_number(self.next_refs[live]).min(),
                )
            )
        else:
            first = self.num_frames_written
        numbers = np.arange(first, self.num_frames_written)
        out[f"{STATE_PREFIX}frames"] = self.frames[numbers % self.num_frame_slots]
        for key in ("obs_refs", "next_refs"):
            refs = self._frame_number(out[f"{STATE_PREFIX}{key}"]) - first
            out[f"{STATE_PREFIX}{key}"] = refs.astype(_REF_DTYPE)
        out[f"{STATE_PREFIX}written_at"] = out[f"{STATE_PREFIX}written_at"] - first
        out[f"{STATE_PREFIX}pos"] = np.array([self.size, len(numbers)], dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if f"{STATE_PREFIX}frames" not in state:
            raise CheckpointError(
                f"checkpoint has no '{STATE_PREFIX}frames'; it was saved by a replay buffer that "
                "stores whole observations, not by one that stores stacked frames once"
            )
        size, num_frames = (int(x) for x in state[f"{STATE_PREFIX}pos"])
        check_state_size(size, self.capacity)
        frames = np.asarray(state[f"{STATE_PREFIX}frames"])
        if frames.shape[1:] != self.frame_shape or num_frames > self.num_frame_slots:
            raise CheckpointError(
                f"checkpointed replay holds {num_frames} frames of shape {frames.shape[1:]}; "
                f"this buffer holds {self.num_frame_slots} of shape {self.frame_shape}"
            )
        self.frames[:num_frames] = frames
        for key, array in self._arrays().items():
            array[:size] = state[f"{STATE_PREFIX}{key}"]
        self.tail = 0
        self.size = size
        self.num_frames_written = num_frames
        # Frames before the checkpoint are not matched again: a few may be stored twice.
        self._recent.clear()
        self._recent_order.clear()
