"""Replay memories: a uniform ring buffer, prioritized sampling, n-step accumulation."""

from qlearn.replay.nstep import NStepAccumulator, NStepOut
from qlearn.replay.prioritized import PrioritizedReplayBuffer, estimate_prioritized_bytes
from qlearn.replay.sum_tree import SumTree
from qlearn.replay.uniform import Batch, ReplayBuffer, estimate_bytes

__all__ = [
    "Batch",
    "NStepAccumulator",
    "NStepOut",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "SumTree",
    "estimate_bytes",
    "estimate_prioritized_bytes",
]
