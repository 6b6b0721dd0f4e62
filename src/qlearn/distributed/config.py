"""`DistributedConfig`: how an Ape-X run spreads over processes (what is learned stays in
`DQNConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from qlearn.config import RUN, ConfigBase, Range

MAX_ACTORS = 4096


@dataclasses.dataclass(frozen=True)
class DistributedConfig(ConfigBase):
    """Ape-X settings: actors, replay shards, blocks, weight broadcasts.

    The algorithm (network, update rule, n-step, PER, batch size, replay ratio) comes from the
    run's `DQNConfig`; these settings say how the work is split. Each actor steps
    `DQNConfig.num_envs` envs; the shards together hold `DQNConfig.buffer_size` transitions.
    """

    num_actors: Annotated[int, Range(1, MAX_ACTORS), RUN] = 2
    """Actor processes, each with its own vector env and copy of the network."""
    num_shards: Annotated[int, Range(1, 64), RUN] = 1
    """Replay shard processes; together they hold `buffer_size` transitions."""
    block_size: Annotated[int, Range(1), RUN] = 64
    """n-step transitions an actor sends in one block (with their initial priorities)."""
    broadcast_interval: Annotated[int, Range(1), RUN] = 50
    """Learner updates between weight broadcasts (one object every actor reads)."""
    prefetch: Annotated[int, Range(1, 64), RUN] = 4
    """Sampled batches the learner keeps requested ahead, so it does not wait on a shard."""
    max_update_lag: Annotated[int, Range(0), RUN] = 256
    """Updates the learner may owe (the replay ratio is `gradient_steps` per `train_interval`
    env steps, as in a single-process run) before actors wait for it. It keeps the replay ratio
    of a single-process run whatever the relative speeds of actors and learner."""
    epsilon_base: Annotated[float, Range(0, 1)] = 0.4
    """Ape-X exploration: actor i of N acts with epsilon_base ** (1 + epsilon_alpha i / (N-1))."""
    epsilon_alpha: Annotated[float, Range(0)] = 7.0
    """Ape-X exploration exponent (see epsilon_base)."""
    max_actor_restarts: Annotated[int, Range(0), RUN] = 100
    """Times Ray restarts a dead actor (its process killed, its node lost) before the run stops."""
    actor_num_cpus: Annotated[float, Range(0), RUN] = 1.0
    """CPUs Ray reserves per actor and per shard; a local cluster is started with enough
    logical CPUs for all of them, whatever the machine has."""
