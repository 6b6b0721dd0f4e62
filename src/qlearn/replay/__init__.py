"""Replay memory composed from parts: a storage (flat arrays, or stacked frames kept once), a
sampler (uniform, or prioritized over a sum tree) and an n-step accumulator, assembled by
`make_replay(config, spec)` into one `ReplayMemory`."""

from qlearn.replay.frames import FrameStackStorage, estimate_frame_bytes
from qlearn.replay.memory import (
    Batch,
    ReplayMemory,
    estimate_replay_bytes,
    make_memory,
    make_replay,
    stores_stacked_frames,
)
from qlearn.replay.nstep import NStepAccumulator, NStepOut
from qlearn.replay.sampler import PrioritizedSampler, Sampler, UniformSampler
from qlearn.replay.storage import FlatStorage, Rows, Storage, estimate_bytes
from qlearn.replay.sum_tree import SumTree

__all__ = [
    "Batch",
    "FlatStorage",
    "FrameStackStorage",
    "NStepAccumulator",
    "NStepOut",
    "PrioritizedSampler",
    "ReplayMemory",
    "Rows",
    "Sampler",
    "Storage",
    "SumTree",
    "UniformSampler",
    "estimate_bytes",
    "estimate_frame_bytes",
    "estimate_replay_bytes",
    "make_memory",
    "make_replay",
    "stores_stacked_frames",
]
