"""Distributed DQN in the Ape-X style (Horgan et al., 2018) on Ray core.

    actors (env + network copy, own epsilon) --blocks of n-step transitions + priorities-->
        replay shards (prioritized memory) --prefetched batches--> learner (the DQN update)
    learner --priorities--> shards;  learner --weights, one object every K updates--> actors

`ApeX` runs it; the same `Actor`, `ReplayShard` and learner step run on Ray (`backend="ray"`)
or inside one process (`backend="local"`, for tests and for reading). This package is the only
place that imports ray, and only when a Ray run starts.
"""

from qlearn.distributed.config import DistributedConfig
from qlearn.distributed.driver import ApeX, is_distributed_run
from qlearn.distributed.parts import (
    Actor,
    Block,
    ReplayShard,
    ape_x_epsilons,
    initial_priorities,
    train_on_batch,
)

__all__ = [
    "Actor",
    "ApeX",
    "Block",
    "DistributedConfig",
    "ReplayShard",
    "ape_x_epsilons",
    "initial_priorities",
    "is_distributed_run",
    "train_on_batch",
]
