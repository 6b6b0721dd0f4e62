"""Replay memories: a uniform ring buffer, prioritized sampling, n-step accumulation."""

from qlearn.replay.uniform import Batch, ReplayBuffer, estimate_bytes

__all__ = ["Batch", "ReplayBuffer", "estimate_bytes"]
