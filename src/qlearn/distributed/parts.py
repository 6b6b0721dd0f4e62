"""The three roles of Ape-X as plain classes: `Actor`, `ReplayShard` and the learner's step.

Nothing here imports ray: the driver (`qlearn.distributed.driver`) runs these classes as Ray
actors, or calls them directly in one process. What crosses a process boundary is plain data:
`Block`s of transitions, `Batch`es, dicts of numpy weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np
import torch

from qlearn.agents.dqn import DQNLearner
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec, make_vector_env
from qlearn.replay import Batch, NStepAccumulator, ReplayMemory, make_replay


def ape_x_epsilons(num_actors: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X's per-actor exploration rates: eps_i = base ** (1 + alpha * i / (N - 1)).

    Actor 0 explores most (`base`), actor N - 1 least (`base ** (1 + alpha)`); one actor gets
    `base`.

    Returns:
        (num_actors,) float64.
    """
    if num_actors == 1:
        return np.array([base])
    i = np.arange(num_actors)
    return base ** (1.0 + alpha * i / (num_actors - 1))


def initial_priorities(
    q_obs: np.ndarray,
    q_next: np.ndarray,
    actions: np.ndarray,
    returns: np.ndarray,
    discounts: np.ndarray,
    terminated: np.ndarray,
) -> np.ndarray:
    """|TD error| of fresh transitions under the actor's copy of the network, as Ape-X's actors
    compute them before sending (so new data needs no learner pass to get a priority):

        |returns + discounts * (1 - terminated) * max_a Q(next_obs, a) - Q(obs, action)|

    Args:
        q_obs: (k, num_actions) Q-values of obs.
        q_next: (k, num_actions) Q-values of next_obs.
        actions: (k,) int actions taken.
        returns: (k,) n-step returns.
        discounts: (k,) gamma ** steps.
        terminated: (k,) bool or {0, 1}.

    Returns:
        (k,) float32.
    """
    k = len(actions)
    bootstrap = discounts * (1.0 - np.asarray(terminated, dtype=np.float64)) * q_next.max(axis=1)
    td = returns + bootstrap - q_obs[np.arange(k), actions]
    return np.abs(td).astype(np.float32)


@dataclasses.dataclass
class Block:
    """n-step transitions an actor sends to a replay shard in one message; leading dim k."""

    obs: np.ndarray  # (k, *obs_shape)
    actions: np.ndarray  # (k,) int64
    returns: np.ndarray  # (k,) float32
    next_obs: np.ndarray  # (k, *obs_shape)
    terminated: np.ndarray  # (k,) bool
    steps: np.ndarray  # (k,) int64 in [1, n]
    priorities: np.ndarray | None  # (k,) |TD error| under the actor's network; None: uniform

    def __len__(self) -> int:
        return len(self.actions)


@dataclasses.dataclass
class ActorReport:
    """What the driver needs to know about a block's collection (small; the block itself can
    travel to a shard without passing through the driver)."""

    actor: int
    num_steps: int
    """Real env steps taken (transitions made, before n-step accumulation)."""
    episode_returns: list[float]
    episode_lengths: list[int]
    epsilon: float
    weights_version: int
    pid: int
    """The actor's process: a new one means Ray restarted the actor."""


def network_weights(learner: DQNLearner) -> dict[str, np.ndarray]:
    """A copy of the online network's state as numpy arrays: what a broadcast carries."""
    return {k: v.detach().cpu().numpy().copy() for k, v in learner.q_net.state_dict().items()}


def load_network_weights(learner: DQNLearner, weights: dict[str, np.ndarray]) -> None:
    """Copy broadcast weights into `learner`'s online network, in place (views stay valid)."""
    state = {k: torch.tensor(np.asarray(v)) for k, v in weights.items()}
    learner.q_net.load_state_dict(state)


def train_on_batch(learner: DQNLearner, batch: Batch) -> tuple[dict[str, float], np.ndarray | None]:
    """One gradient step of the DQN update on a batch sampled elsewhere (a shard).

    The batch goes to the learner's engine as `DQNLearner.update` hands it a batch it sampled
    itself (the batch's importance weights were computed by the shard's sampler), with the
    learner's non-finite handling (`config.on_nonfinite`); `learner.num_updates` counts the
    step when it is applied.

    Returns:
        (metrics of the update, or {} when skipped; (batch,) new priorities, or None when the
        config is not prioritized or the step was skipped).
    """
    result = learner.engine.update(batch, 1, learner.on_nonfinite)
    learner.num_updates += result.num_applied
    return result.metrics(), result.priorities if result.num_applied else None


class Actor:
    """Steps a vector env with a copy of the network and an exploration rate of its own, and
    turns what it sees into blocks of n-step transitions with initial priorities.

    Until the first weights arrive it acts uniformly at random (the warm-up a single-process
    run does before `learning_starts`).

    Args:
        env_id: Gymnasium env id.
        spec: the env's spaces.
        config: the run's config (num_envs, n_step, gamma, network, clip_rewards, ...).
        index: the actor's number, 0..N-1.
        epsilon: its exploration rate after the warm-up.
        block_size: n-step transitions per block.
        seed: seeds its envs and its exploration.
    """

    def __init__(
        self,
        env_id: str,
        spec: EnvSpec,
        config: DQNConfig,
        index: int,
        epsilon: float,
        block_size: int,
        seed: int,
    ) -> None:
        torch.set_num_threads(config.torch_threads)
        self.index = index
        self.epsilon = epsilon
        self.block_size = block_size
        self.config = config
        # An acting copy: its optimizer is never stepped and its replay never made.
        self.learner = DQNLearner(spec, config.replace(seed=seed, engine="torch"))
        self.envs = make_vector_env(env_id, config.num_envs, frame_stack=config.frame_stack)
        n = config.num_envs
        self.accumulator = NStepAccumulator(config.n_step, config.gamma, n)
        self.obs, _ = self.envs.reset(seed=seed)
        self.prev_done = np.zeros(n, dtype=bool)
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, dtype=np.int64)
        self.weights_version = -1  # none yet: act at random
        self._discounts = (config.gamma ** np.arange(256)).astype(np.float32)

    def pid(self) -> int:
        """The process id (the fault test kills it)."""
        return os.getpid()

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Take the learner's broadcast weights."""
        load_network_weights(self.learner, weights)
        self.weights_version = version

    def current_epsilon(self) -> float:
        c = self.config
        if self.weights_version < 0:
            return 1.0
        return 0.0 if c.noisy or c.exploration == "softmax" else self.epsilon

    def collect(self) -> tuple[Block, ActorReport]:
        """Step the envs until at least `block_size` n-step transitions are finished."""
        c, learner, envs = self.config, self.learner, self.envs
        parts: list[Any] = []
        finished = 0
        steps = 0
        returns: list[float] = []
        lengths: list[int] = []
        epsilon = self.current_epsilon()
        while finished < self.block_size:
            actions = learner.act(self.obs, epsilon)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions)
            valid = ~self.prev_done
            steps += int(valid.sum())
            stored = np.clip(rewards, -1.0, 1.0) if c.clip_rewards else rewards
            out = self.accumulator.push(
                self.obs, actions, stored, next_obs, terminated, truncated, valid
            )
            if out is not None:
                parts.append(out)
                finished += len(out)
            done = terminated | truncated
            self.ep_return += np.where(valid, rewards, 0.0)
            self.ep_length += valid
            for i in np.flatnonzero(done & valid):
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_length[i]))
            self.ep_return[done] = 0.0
            self.ep_length[done] = 0
            self.prev_done = done
            self.obs = next_obs
        block = Block(
            obs=np.concatenate([p.obs for p in parts]),
            actions=np.concatenate([p.actions for p in parts]).astype(np.int64),
            returns=np.concatenate([p.returns for p in parts]).astype(np.float32),
            next_obs=np.concatenate([p.next_obs for p in parts]),
            terminated=np.concatenate([p.terminated for p in parts]).astype(bool),
            steps=np.concatenate([p.steps for p in parts]).astype(np.int64),
            priorities=None,
        )
        if c.prioritized:
            block.priorities = initial_priorities(
                learner.q_values(block.obs),
                learner.q_values(block.next_obs),
                block.actions,
                block.returns,
                self._discounts[block.steps],
                block.terminated,
            )
        report = ActorReport(
            self.index, steps, returns, lengths, epsilon, self.weights_version, os.getpid()
        )
        return block, report


class ReplayShard:
    """One part of the replay: the project's memory (`make_replay`), holding
    `ceil(buffer_size / num_shards)` transitions and sampling them as configured.

    Args:
        config: the run's config (buffer_size, prioritized, per_alpha, ...).
        spec: the env's spaces.
        num_shards: how many shards share `buffer_size`.
        seed: seeds its sampling.
    """

    def __init__(self, config: DQNConfig, spec: EnvSpec, num_shards: int, seed: int) -> None:
        capacity = max(config.batch_size, math.ceil(config.buffer_size / num_shards))
        # Blocks arrive as finished n-step transitions: the shard needs no accumulator.
        self.memory: ReplayMemory = make_replay(
            config.replace(buffer_size=capacity, n_step=1, num_envs=1), spec
        )
        self.rng = np.random.default_rng(seed)

    def pid(self) -> int:
        return os.getpid()

    def add(self, block: Block) -> int:
        """Store a block with the priorities its actor computed; returns the shard's size."""
        slots = self.memory.add_transitions(
            block.obs, block.actions, block.returns, block.next_obs, block.terminated, block.steps
        )
        if block.priorities is not None:
            self.memory.update_priorities(slots, block.priorities)
        return len(self.memory)

    def sample(self, batch_size: int, beta: float) -> Batch | None:
        """A mini-batch as the memory's sampler draws it; None while the shard is empty."""
        if len(self.memory) == 0:
            return None
        return self.memory.sample(batch_size, self.rng, beta=beta)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.memory.update_priorities(indices, td_errors)

    def size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The memory's arrays, and this shard's sampling generator's state."""
        state = self.memory.state_dict()
        state["shard.rng"] = _rng_to_array(self.rng)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        rng = state.pop("shard.rng", None)
        self.memory.load_state_dict(state)
        if rng is not None:
            self.rng.bit_generator.state = _rng_from_array(rng)


def _rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """PCG64 state as uint64 words (state and increment, 128 bits each; the buffered uinteger),
    so it fits a safetensors file."""
    s = rng.bit_generator.state
    words = []
    for value in (s["state"]["state"], s["state"]["inc"]):
        words += [value >> 64, value & (2**64 - 1)]
    words += [s["has_uint32"], s["uinteger"]]
    return np.array(words, dtype=np.uint64)


def _rng_from_array(words: np.ndarray) -> dict[str, Any]:
    w = [int(x) for x in words]
    return {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
