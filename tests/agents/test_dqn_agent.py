"""DQNLearner: updates, target sync, acting, state round trip (the engines' own math is tested
in test_engine.py and test_numpy_mlp.py)."""

import numpy as np
import pytest
import torch

from qlearn.agents.dqn import DQNLearner, pick_network
from qlearn.agents.engine import TorchEngine
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import ConfigError, TrainingError

BOX = EnvSpec("box", (4,), "float32", 2)


def filled_agent(config: DQNConfig, n: int = 200, seed: int = 0) -> DQNLearner:
    agent = DQNLearner(BOX, config)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        obs = rng.standard_normal(4).astype(np.float32)
        nxt = rng.standard_normal(4).astype(np.float32)
        agent.replay.add_one(
            obs, int(rng.integers(2)), float(rng.random()), nxt, rng.random() < 0.1
        )
    return agent


def test_update_changes_weights_and_target_copy_makes_them_equal() -> None:
    agent = filled_agent(DQNConfig(batch_size=32))
    before = [p.clone() for p in agent.q_net.parameters()]
    metrics = agent.update()
    assert set(metrics) >= {"loss", "q_mean"}
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.q_net.parameters(), strict=True))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(agent.q_net.parameters(), agent.target_net.parameters(), strict=True)
    )
    agent.sync_target()
    for a, b in zip(agent.q_net.parameters(), agent.target_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_polyak_update_moves_target_by_tau() -> None:
    agent = filled_agent(DQNConfig(tau=0.1))
    agent.update()
    old_target = [p.clone() for p in agent.target_net.parameters()]
    online = [p.clone() for p in agent.q_net.parameters()]
    agent.sync_target()
    for t_old, o, t_new in zip(old_target, online, agent.target_net.parameters(), strict=True):
        torch.testing.assert_close(t_new, t_old + 0.1 * (o - t_old))


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_numpy_fast_policy_matches_torch_forward(engine: str) -> None:
    # Both engines act on a plain MLP through numpy (the torch one through views of its
    # parameters, which the optimizer moves in place); the torch forward pass must agree.
    agent = filled_agent(DQNConfig(hidden_sizes=(32, 16), engine=engine))
    for _ in range(5):
        agent.update()
    obs = np.random.default_rng(3).standard_normal((10, 4)).astype(np.float32)
    if isinstance(agent.engine, TorchEngine):
        assert agent.engine._layers is not None
    with torch.no_grad():
        expected = agent.q_net(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(agent.q_values(obs), expected, rtol=1e-5, atol=1e-6)


def test_greedy_and_uniform_acting() -> None:
    agent = DQNLearner(BOX, DQNConfig(learning_starts=0))
    obs = np.zeros((5, 4), dtype=np.float32)
    greedy = agent.q_values(obs).argmax(axis=1)
    np.testing.assert_array_equal(agent.act(obs, 0.0), greedy)
    # epsilon = 1: uniform over both actions.
    actions = np.concatenate([agent.act(obs, 1.0) for _ in range(400)])
    assert 0.4 < actions.mean() < 0.6


def test_noisy_acting_redraws_the_noise_at_every_call() -> None:
    """Noisy nets explore through their noise: the same observations, acted on again, get other
    actions (with one fixed noise draw they would always get the same ones), while `predict`
    stays the noise-free greedy policy of the mean weights."""
    agent = DQNLearner(BOX, DQNConfig(noisy=True, learning_starts=0, hidden_sizes=(32, 32)))
    obs = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    epsilon = 0.0  # what `qlearn.schedules.epsilon` gives noisy nets after learning_starts
    batches = [agent.act(obs, epsilon) for _ in range(20)]
    assert len({tuple(a) for a in batches}) > 1
    # One env (the single-env fast path): measured 160 and 40 of 200 for the two actions.
    singles = {int(agent.act(obs[:1], epsilon)[0]) for _ in range(200)}
    assert singles == {0, 1}
    greedy = [agent.predict(obs) for _ in range(3)]
    for g in greedy[1:]:
        np.testing.assert_array_equal(g, greedy[0])
    with torch.no_grad():
        agent.q_net.eval()
        mean_q = agent.q_net(torch.from_numpy(obs)).numpy()
        agent.q_net.train()
    np.testing.assert_array_equal(greedy[0], mean_q.argmax(axis=1))


def test_softmax_exploration_samples_every_action() -> None:
    agent = DQNLearner(BOX, DQNConfig(exploration="softmax", temperature=100.0))
    obs = np.zeros((200, 4), dtype=np.float32)
    actions = agent.act(obs, 0.0)
    assert set(np.unique(actions)) == {0, 1}


@pytest.mark.parametrize(
    "flags",
    [
        {"dueling": True},
        {"noisy": True},
        {"distributional": "c51", "v_min": 0.0, "v_max": 10.0, "num_atoms": 11},
        {"distributional": "qr", "num_atoms": 8},
        {"prioritized": True},
        {
            "double_q": True,
            "dueling": True,
            "prioritized": True,
            "noisy": True,
            "distributional": "c51",
        },
    ],
)
def test_every_variant_updates_with_finite_loss(flags: dict) -> None:
    agent = filled_agent(DQNConfig(batch_size=16, **flags))
    for _ in range(3):
        metrics = agent.update(beta=0.5)
        assert np.isfinite(metrics["loss"])
    assert agent.q_values(np.zeros((2, 4), dtype=np.float32)).shape == (2, 2)


def test_state_round_trip_is_exact() -> None:
    agent = filled_agent(DQNConfig(batch_size=16))
    for _ in range(4):
        agent.update()
    tensors = {k: v.clone() for k, v in agent.tensors().items()}
    rng_state = agent.rng_state()
    other = DQNLearner(BOX, DQNConfig(batch_size=16, seed=5))
    other.load_tensors(tensors)
    other.load_rng_state(rng_state)
    for key, value in other.tensors().items():
        assert torch.equal(value, tensors[key]), key
    assert other.rng.random() == agent.rng.random()


def test_nonfinite_loss_raises_or_skips() -> None:
    agent = filled_agent(DQNConfig(batch_size=8))
    agent.replay.storage.returns[:] = np.inf
    with pytest.raises(TrainingError, match="non-finite loss"):
        agent.update()
    skipping = filled_agent(DQNConfig(batch_size=8, on_nonfinite="skip"))
    skipping.replay.storage.returns[:] = np.nan
    before = [p.clone() for p in skipping.q_net.parameters()]
    with pytest.warns(RuntimeWarning, match="skipped an update"):
        assert skipping.update() == {}
    for a, b in zip(before, skipping.q_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_grad_norm_logging() -> None:
    agent = filled_agent(DQNConfig(log_grad_norms=True))
    metrics = agent.update()
    norms = {k: v for k, v in metrics.items() if k.startswith("grad_norm/")}
    assert len(norms) == 3 and all(v >= 0 for v in norms.values())


def test_network_choice() -> None:
    assert pick_network(DQNConfig(), BOX) == "mlp"
    assert pick_network(DQNConfig(), EnvSpec("box", (4, 84, 84), "uint8", 6)) == "nature_cnn"
    assert pick_network(DQNConfig(), EnvSpec("box", (4, 10, 10), "uint8", 6)) == "minatar_cnn"
    with pytest.raises(ConfigError, match="needs image observations"):
        pick_network(DQNConfig(network="nature_cnn"), BOX)
