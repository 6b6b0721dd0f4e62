"""The stacked learners against single `DQNLearner`s fed the same transitions."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn.agents.dqn import DQNLearner
from qlearn.agents.stacked import (
    PerSeedLearners,
    StackedMLPLearner,
    StackedTorchLearner,
    make_stacked_learner,
)
from qlearn.config import DQNConfig
from qlearn.envs import env_spec
from qlearn.errors import ConfigError

SPEC = env_spec(gym.spaces.Box(-5, 5, shape=(4,), dtype=np.float32), gym.spaces.Discrete(3), "test")
SEEDS = (0, 7, 2)


def fill(replays, num: int = 400) -> None:
    """The same stream of random transitions into every memory in `replays`, per seed index."""
    data = np.random.default_rng(5)
    for _ in range(num):
        obs = data.normal(size=(len(SEEDS), 4)).astype(np.float32)
        nxt = data.normal(size=(len(SEEDS), 4)).astype(np.float32)
        actions = data.integers(3, size=len(SEEDS))
        rewards = data.normal(size=len(SEEDS))
        done = data.random(len(SEEDS)) < 0.05
        for group in replays:
            for k, replay in enumerate(group):
                replay.add_one(obs[k], int(actions[k]), float(rewards[k]), nxt[k], bool(done[k]))


VARIANTS = {
    "plain_mse": {"double_q": False, "loss": "mse"},
    "double_clipped": {"double_q": True, "max_grad_norm": 0.5},
    "prioritized": {"prioritized": True, "double_q": True},
    "nstep_polyak": {"n_step": 3, "tau": 0.1},
    "dueling": {"dueling": True, "double_q": True, "max_grad_norm": 0.5},
    "c51": {"distributional": "c51", "v_min": -5.0, "v_max": 5.0, "num_atoms": 11},
    "qr_prioritized": {"distributional": "qr", "num_atoms": 8, "prioritized": True},
    "torch_engine": {"engine": "torch", "double_q": True},
    "noisy": {"noisy": True},
    "softmax": {"exploration": "softmax", "temperature": 0.5},
    "softmax_dueling": {"exploration": "softmax", "temperature": 0.5, "dueling": True},
}
ENGINES = {"noisy": PerSeedLearners}
ENGINES.update(
    {
        v: StackedTorchLearner
        for v in ("dueling", "c51", "qr_prioritized", "torch_engine", "softmax_dueling")
    }
)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_seed_equals_its_single_learner(variant: str) -> None:
    config = DQNConfig(hidden_sizes=(32, 16), batch_size=16, **VARIANTS[variant])
    stacked = make_stacked_learner(SPEC, config, SEEDS)
    engine = ENGINES.get(variant, StackedMLPLearner)
    assert isinstance(stacked, engine)
    # The numpy engine is bit for bit the single numpy engine; torch.func's batched products
    # round differently from the single torch engine's, within float32 tolerance.
    tolerance = 1e-5 if engine is StackedTorchLearner else 0.0
    singles = [DQNLearner(SPEC, config.replace(seed=s)) for s in SEEDS]
    fill([stacked.replays, [s.replay for s in singles]])
    obs = np.random.default_rng(1).normal(size=(len(SEEDS), 4)).astype(np.float32)
    for _ in range(15):
        metrics = stacked.update(6, 0.6)
        single_metrics = [s.update(6, 0.6) for s in singles]
        stacked.sync_target()
        for s in singles:
            s.sync_target()
        for k in range(len(SEEDS)):
            assert metrics[k]["loss"] == pytest.approx(single_metrics[k]["loss"], rel=1e-4)
        actions = stacked.act(obs, 0.5)
        np.testing.assert_array_equal(
            actions, [int(s.act(obs[k : k + 1], 0.5)[0]) for k, s in enumerate(singles)]
        )
    for k, single in enumerate(singles):
        assert stacked.seed_num_updates(k) == single.num_updates == 90
        mine, theirs = stacked.seed_tensors(k), single.tensors()
        assert set(mine) == set(theirs)
        for key in theirs:
            atol = tolerance if key != "torch_rng" else 0.0
            torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=atol, msg=key)
        # The greedy Q-values (noise off) of the stacked forward pass are the single learner's.
        single.q_net.eval()
        np.testing.assert_allclose(
            stacked.q_values(obs[:, None])[k], single.q_values(obs[k : k + 1]), rtol=1e-5
        )


def test_seed_tensors_round_trip_through_load() -> None:
    config = DQNConfig(hidden_sizes=(8,), batch_size=8)
    a = make_stacked_learner(SPEC, config, SEEDS)
    fill([a.replays])
    a.update(5, 1.0)
    b = make_stacked_learner(SPEC, config, (10, 11, 12))
    for k in range(len(SEEDS)):
        b.load_seed_tensors(k, a.seed_tensors(k))
    for k in range(len(SEEDS)):
        for key, value in a.seed_tensors(k).items():
            torch.testing.assert_close(b.seed_tensors(k)[key], value, rtol=0, atol=0)


def test_a_single_runs_tensors_load_into_a_seed() -> None:
    """A checkpoint of a single run fits a seed of the stacked learner, and back."""
    config = DQNConfig(hidden_sizes=(8,), batch_size=8)
    single = DQNLearner(SPEC, config.replace(seed=4))
    fill([[single.replay] * len(SEEDS)], num=50)
    single.update(3)
    stacked = make_stacked_learner(SPEC, config, SEEDS)
    stacked.load_seed_tensors(1, single.tensors())
    fresh = DQNLearner(SPEC, config)
    fresh.load_tensors(stacked.seed_tensors(1))
    for key, value in single.tensors().items():
        torch.testing.assert_close(fresh.tensors()[key], value, rtol=0, atol=0)


def test_bad_seed_lists_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        make_stacked_learner(SPEC, DQNConfig(), (1, 1))
    with pytest.raises(ConfigError, match="num_seeds = 0"):
        make_stacked_learner(SPEC, DQNConfig(), ())


def test_target_pass_in_seed_groups_gives_the_same_values(monkeypatch) -> None:
    """Seeds go through the target network in groups (bounded memory) with unchanged values."""
    from qlearn.agents import stacked as module

    learner = make_stacked_learner(SPEC, DQNConfig(hidden_sizes=(32,)), range(5))
    x = np.random.default_rng(0).normal(size=(5, 300, 4)).astype(np.float32)
    whole = learner.forward(learner._target, x)[-1]
    for limit in (700, 300, 100):  # groups of 2 seeds, one seed, row chunks of one seed
        monkeypatch.setattr(module, "MAX_TARGET_ROWS", limit)
        np.testing.assert_array_equal(learner._target_values(x), whole)


@pytest.mark.parametrize("dueling", [False, True])
def test_softmax_act_draws_as_single_learners(dueling: bool) -> None:
    # Some seeds explore and some draw from the softmax at each call: each greedy seed must
    # draw from its own Q-values (not a neighbour's) with its own generator.
    config = DQNConfig(hidden_sizes=(16,), exploration="softmax", temperature=0.05, dueling=dueling)
    stacked = make_stacked_learner(SPEC, config, SEEDS)
    singles = [DQNLearner(SPEC, config.replace(seed=s)) for s in SEEDS]
    data = np.random.default_rng(3)
    for _ in range(200):
        obs = (10 * data.normal(size=(len(SEEDS), 4))).astype(np.float32)
        np.testing.assert_array_equal(
            stacked.act(obs, 0.5),
            [int(s.act(obs[k : k + 1], 0.5)[0]) for k, s in enumerate(singles)],
        )
