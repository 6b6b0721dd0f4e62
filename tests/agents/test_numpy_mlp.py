"""The numpy update engine: the same update as torch autograd + torch Adam, on its own arrays."""

import numpy as np
import pytest
import torch

from qlearn.agents.dqn import DQNLearner
from qlearn.agents.engine import TorchEngine
from qlearn.agents.numpy_mlp import NumpyMLPEngine
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import ConfigError, TrainingError

BOX = EnvSpec("box", (4,), "float32", 2)


def filled(config: DQNConfig, n: int = 300, n_step_discounts: bool = False) -> DQNLearner:
    """An agent whose replay holds the same random transitions for every config."""
    agent = DQNLearner(BOX, config)
    rng = np.random.default_rng(0)
    for _ in range(n):
        obs = rng.standard_normal((1, 4)).astype(np.float32)
        nxt = rng.standard_normal((1, 4)).astype(np.float32)
        agent.replay.add(
            obs, rng.integers(2, size=1), 3 * rng.standard_normal(1), nxt, rng.random(1) < 0.1
        )
    if n_step_discounts:
        # Mixed k-step transitions (discount gamma**k), as n-step returns store at episode ends.
        agent.replay.storage.steps[:n] = rng.integers(1, 4, size=n)
    return agent


def twin_agents(**flags) -> tuple[DQNLearner, DQNLearner]:
    torch_agent, numpy_agent = (
        filled(DQNConfig(engine=e, batch_size=16, seed=3, **flags), n_step_discounts=True)
        for e in ("torch", "numpy")
    )
    assert isinstance(torch_agent.engine, TorchEngine)
    assert isinstance(numpy_agent.engine, NumpyMLPEngine)
    return torch_agent, numpy_agent


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"double_q": True},
        {"loss": "mse", "max_grad_norm": 0.01},
        {"prioritized": True, "double_q": True},
        {"max_grad_norm": None, "hidden_sizes": (32, 16, 8), "learning_rate": 1e-2},
        {"tau": 0.3},
    ],
)
def test_numpy_engine_equals_torch_engine(flags: dict) -> None:
    # Same seed, same replay: the same mini-batches (all of a phase drawn at once consumes the
    # generator exactly as one draw per update), so weights, Adam moments and step counts match.
    torch_agent, numpy_agent = twin_agents(**flags)
    for agent in (torch_agent, numpy_agent):
        agent.update(5, beta=0.5)
        agent.sync_target()
        agent.update(3, beta=0.5)
    expected, actual = torch_agent.tensors(), numpy_agent.tensors()
    assert list(expected) == list(actual)
    for key in expected:
        if key != "torch_rng":
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)
    assert numpy_agent.num_updates == torch_agent.num_updates == 8
    if flags.get("prioritized"):
        size = len(torch_agent.replay)
        np.testing.assert_allclose(
            numpy_agent.replay.sampler.tree.get(np.arange(size)),  # type: ignore[attr-defined]
            torch_agent.replay.sampler.tree.get(np.arange(size)),  # type: ignore[attr-defined]
            rtol=1e-5,
        )


def test_torch_modules_see_the_engine_weights() -> None:
    # The engine owns its arrays; the torch modules are refreshed from them when asked for.
    agent = filled(DQNConfig(engine="numpy", hidden_sizes=(32, 16), tau=0.5))
    agent.update(5)
    agent.sync_target()
    obs = np.random.default_rng(3).standard_normal((10, 4)).astype(np.float32)
    engine = agent.engine
    assert isinstance(engine, NumpyMLPEngine)
    with torch.no_grad():
        online = agent.q_net(torch.from_numpy(obs)).numpy()
        target = agent.target_net(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(engine.q_values(obs), online, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(agent.q_values(obs), online, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(engine.target_values(obs), target, rtol=1e-5, atol=1e-6)
    assert not np.allclose(online, target)  # tau = 0.5 leaves the target between the two
    # The modules are views for reading: the engine never reads them back.
    with torch.no_grad():
        for p in agent.q_net.parameters():
            p.zero_()
    assert np.abs(engine.flat).sum() > 0
    assert float(agent.tensors()["optim.0.step"]) == 5


@pytest.mark.parametrize(("saver", "loader"), [("numpy", "torch"), ("torch", "numpy")])
def test_state_moves_between_engines(saver: str, loader: str) -> None:
    source = filled(DQNConfig(engine=saver, batch_size=16))
    source.update(4)
    tensors = {k: v.clone() for k, v in source.tensors().items()}
    target = filled(DQNConfig(engine=loader, batch_size=16, seed=9))
    target.load_tensors(tensors)
    target.load_rng_state(source.rng_state())
    target.num_updates = source.num_updates
    for key, value in target.tensors().items():
        assert torch.equal(value, tensors[key]), key
    # Both continue identically from the same state.
    source.update(3)
    target.update(3)
    for a, b in zip(source.q_net.parameters(), target.q_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_auto_picks_numpy_only_where_it_applies() -> None:
    assert isinstance(DQNLearner(BOX, DQNConfig()).engine, NumpyMLPEngine)
    assert isinstance(DQNLearner(BOX, DQNConfig(engine="torch")).engine, TorchEngine)
    for flags in (
        {"dueling": True},
        {"noisy": True},
        {"log_grad_norms": True},
        {"distributional": "qr"},
    ):
        assert isinstance(DQNLearner(BOX, DQNConfig(**flags)).engine, TorchEngine)
    image = EnvSpec("box", (4, 10, 10), "uint8", 6)
    assert isinstance(DQNLearner(image, DQNConfig()).engine, TorchEngine)


def test_explicit_numpy_engine_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match=r"engine = 'numpy'.*dueling = true.*allowed"):
        DQNLearner(BOX, DQNConfig(engine="numpy", dueling=True))
    with pytest.raises(ConfigError, match="engine"):
        DQNConfig(engine="jax")  # type: ignore[arg-type]


def test_nonfinite_loss_raises_or_skips_without_touching_weights() -> None:
    agent = filled(DQNConfig(engine="numpy", batch_size=8))
    agent.replay.storage.returns[:] = np.inf
    with pytest.raises(TrainingError, match="non-finite loss"):
        agent.update(4)
    skipping = filled(DQNConfig(engine="numpy", batch_size=8, on_nonfinite="skip"))
    skipping.replay.storage.returns[:] = np.nan
    assert isinstance(skipping.engine, NumpyMLPEngine)
    before = skipping.engine.flat.copy()
    with pytest.warns(RuntimeWarning, match="skipped an update"):
        assert skipping.update(3) == {}
    np.testing.assert_array_equal(skipping.engine.flat, before)
    assert skipping.num_updates == 0
