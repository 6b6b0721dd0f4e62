"""Replay memories: a uniform ring buffer, prioritized sampling, n-step accumulation, and
frame-sharing storage for stacked image observations."""

from qlearn.replay.frames import (
    FrameStackReplayBuffer,
    PrioritizedFrameStackReplayBuffer,
    estimate_frame_bytes,
)
from qlearn.replay.nstep import NStepAccumulator, NStepOut
from qlearn.replay.prioritized import PrioritizedReplayBuffer, estimate_prioritized_bytes
from qlearn.replay.sum_tree import SumTree
from qlearn.replay.uniform import Batch, ReplayBuffer, estimate_bytes

__all__ = [
    "Batch",
    "FrameStackReplayBuffer",
    "NStepAccumulator",
    "NStepOut",
    "PrioritizedFrameStackReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "SumTree",
    "estimate_bytes",
    "estimate_frame_bytes",
    "estimate_prioritized_bytes",
]
