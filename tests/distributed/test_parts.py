"""The Ape-X parts in one process: exploration rates, initial priorities, the learner's step on
a batch from elsewhere, actors' blocks and shards, against hand values and the single-process
update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlearn.agents.dqn import DQNLearner
from qlearn.config import DQNConfig
from qlearn.distributed import (
    Actor,
    DistributedConfig,
    ReplayShard,
    ape_x_epsilons,
    initial_priorities,
    train_on_batch,
)
from qlearn.distributed.driver import learner_clock, updates_due
from qlearn.distributed.parts import Block, network_weights
from qlearn.envs import env_spec, make_env
from qlearn.errors import ConfigError, TrainingError
from qlearn.replay import Batch

ENV = "CartPole-v1"


def cartpole_spec():
    env = make_env(ENV)
    spec = env_spec(env.observation_space, env.action_space, ENV)
    env.close()
    return spec


def test_ape_x_epsilons_by_hand() -> None:
    eps = ape_x_epsilons(4)
    # 0.4 ** (1 + 7 i / 3) for i = 0..3; the last is 0.4 ** 8 = 0.00065536.
    assert eps[0] == pytest.approx(0.4)
    assert eps[1] == pytest.approx(0.4 ** (10 / 3))
    assert eps[2] == pytest.approx(0.4 ** (17 / 3))
    assert eps[3] == pytest.approx(0.00065536)
    assert ape_x_epsilons(1).tolist() == [0.4]
    assert ape_x_epsilons(2, base=0.5, alpha=1.0).tolist() == [0.5, 0.25]


def test_initial_priorities_by_hand() -> None:
    q_obs = np.array([[1.0, 2.0], [0.0, 5.0]])
    q_next = np.array([[3.0, 1.0], [2.0, 4.0]])
    td = initial_priorities(
        q_obs,
        q_next,
        actions=np.array([1, 0]),
        returns=np.array([1.0, 0.5]),
        discounts=np.array([0.9, 0.81]),
        terminated=np.array([False, True]),
    )
    # Row 0: |1 + 0.9 * max(3, 1) - Q(s, 1) = 2| = 1.7; row 1 terminated: |0.5 - 0| = 0.5.
    np.testing.assert_allclose(td, [1.7, 0.5], rtol=1e-6)


def test_update_schedule_by_hand() -> None:
    c = DQNConfig(learning_starts=1000, train_interval=4, gradient_steps=2)
    assert updates_due(c, 999) == 0
    assert updates_due(c, 1000) == 2  # a multiple of train_interval: updates at 1000
    assert updates_due(c, 1004) == 4
    assert updates_due(c, 1011) == 6
    assert updates_due(c.replace(learning_starts=0), 7) == 2  # at 4; step 0 crosses nothing
    assert updates_due(c.replace(learning_starts=1001), 1004) == 2
    # A resumed learner picks the schedule up where its updates say it was.
    assert learner_clock(c, 0, 500) == 500
    assert learner_clock(c, 0, 5000) == 999
    assert learner_clock(c, 4, 5000) == 1004  # updates at 1000 and 1004
    assert updates_due(c, learner_clock(c, 4, 5000)) == 4


def test_distributed_config_ranges() -> None:
    with pytest.raises(ConfigError, match="num_actors = 0 is out of range"):
        DistributedConfig(num_actors=0)
    assert DistributedConfig.from_dict({"num_actors": "4"}).num_actors == 4


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_train_on_batch_is_the_learners_own_update(engine: str) -> None:
    """A learner fed a batch sampled elsewhere ends with the weights, and hands back the
    priorities, of the same learner sampling that batch itself."""
    spec = cartpole_spec()
    config = DQNConfig(
        hidden_sizes=(16,), batch_size=8, buffer_size=100, prioritized=True, engine=engine
    )
    own = DQNLearner(spec, config)
    fed = DQNLearner(spec, config)
    rng = np.random.default_rng(3)
    for _ in range(50):
        obs, next_obs = rng.normal(size=(2, 1, 4)).astype(np.float32)
        own.replay.add(obs, rng.integers(2, size=1), rng.normal(size=1), next_obs, [False])
    # The batch own.update will draw: a generator in the same state, the same beta.
    probe = np.random.default_rng()
    probe.bit_generator.state = own.rng.bit_generator.state
    batch = own.replay.sample(8, probe, beta=0.5)
    own.update(1, beta=0.5)
    metrics, td = train_on_batch(fed, batch)
    for a, b in zip(own.q_net.parameters(), fed.q_net.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert fed.num_updates == own.num_updates == 1
    assert metrics["loss"] > 0
    assert td is not None and td.shape == (8,)
    # The priorities own.update wrote are (|td| + eps) ** alpha at the sampled slots.
    tree = own.replay.sampler.tree
    expected = (np.abs(td) + config.per_eps) ** config.per_alpha
    np.testing.assert_allclose(tree.get(batch.indices), expected, rtol=1e-5)
    assert fed._replay is None  # fed never sampled: its replay was never made


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_train_on_batch_nonfinite_loss(engine: str) -> None:
    """A NaN return makes the loss NaN: "skip" warns and leaves weights, count and priorities
    alone; "error" raises TrainingError naming the update."""
    spec = cartpole_spec()
    config = DQNConfig(hidden_sizes=(16,), batch_size=4, prioritized=True, engine=engine)
    rng = np.random.default_rng(0)
    batch = Batch(
        obs=rng.normal(size=(4, 4)).astype(np.float32),
        actions=np.array([0, 1, 0, 1]),
        returns=np.array([1.0, np.nan, 1.0, 1.0], dtype=np.float32),
        next_obs=rng.normal(size=(4, 4)).astype(np.float32),
        terminated=np.zeros(4, dtype=np.float32),
        discounts=np.full(4, 0.99, dtype=np.float32),
        weights=np.ones(4, dtype=np.float32),
        indices=np.arange(4),
    )
    learner = DQNLearner(spec, config.replace(on_nonfinite="skip"))
    before = [p.detach().clone() for p in learner.q_net.parameters()]
    with pytest.warns(RuntimeWarning, match="skipped an update"):
        metrics, td = train_on_batch(learner, batch)
    assert (metrics, td, learner.num_updates) == ({}, None, 0)
    for a, b in zip(before, learner.q_net.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at update 0"):
        train_on_batch(DQNLearner(spec, config), batch)


def test_actor_blocks_and_weights() -> None:
    spec = cartpole_spec()
    config = DQNConfig(hidden_sizes=(16,), n_step=3, gamma=0.9, prioritized=True, num_envs=2)
    actor = Actor(ENV, spec, config, index=1, epsilon=0.1, block_size=10, seed=5)
    assert actor.current_epsilon() == 1.0  # no weights yet: the random warm-up
    block, report = actor.collect()
    assert len(block) >= 10 and report.num_steps >= 10 and report.epsilon == 1.0
    assert set(np.unique(block.steps)) <= {1, 2, 3}
    # CartPole pays 1 a step: a k-step return is 1 + 0.9 + ... + 0.9^(k-1).
    np.testing.assert_allclose(block.returns, (1 - 0.9**block.steps) / (1 - 0.9), rtol=1e-6)
    # The priorities are initial_priorities under the actor's own network.
    q = actor.learner.q_values
    discounts = 0.9**block.steps
    expected = initial_priorities(
        q(block.obs), q(block.next_obs), block.actions, block.returns, discounts, block.terminated
    )
    np.testing.assert_allclose(block.priorities, expected, rtol=1e-5)
    learner = DQNLearner(spec, config.replace(seed=9))
    actor.set_weights(network_weights(learner), version=0)
    assert actor.current_epsilon() == 0.1
    np.testing.assert_allclose(q(block.obs), learner.q_values(block.obs), rtol=1e-6)


def test_shard_stores_priorities_and_round_trips() -> None:
    spec = cartpole_spec()
    config = DQNConfig(hidden_sizes=(16,), buffer_size=100, batch_size=4, prioritized=True)
    shard = ReplayShard(config, spec, num_shards=2, seed=0)
    assert shard.memory.capacity == 50
    rng = np.random.default_rng(0)
    block = Block(
        obs=rng.normal(size=(6, 4)).astype(np.float32),
        actions=np.array([0, 1, 0, 1, 0, 1]),
        returns=np.ones(6, dtype=np.float32),
        next_obs=rng.normal(size=(6, 4)).astype(np.float32),
        terminated=np.zeros(6, dtype=bool),
        steps=np.array([1, 1, 2, 3, 3, 3]),
        priorities=np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32),
    )
    assert shard.add(block) == 6
    tree = shard.memory.sampler.tree
    expected = (np.arange(6.0) + config.per_eps) ** config.per_alpha
    np.testing.assert_allclose(tree.get(np.arange(6)), expected, rtol=1e-6)
    copy = ReplayShard(config, spec, num_shards=2, seed=1)
    copy.load_state_dict(shard.state_dict())
    a, b = shard.sample(4, beta=0.5), copy.sample(4, beta=0.5)
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    # gamma ** steps from the stored step counts
    np.testing.assert_allclose(a.discounts, 0.99 ** block.steps[a.indices], rtol=1e-6)
    assert ReplayShard(config, spec, 1, 0).sample(4, beta=1.0) is None
