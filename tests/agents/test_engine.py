"""Update engines: the protocol, the update against hand-computed values, exact state round
trips, and checkpoints written before the engines were split out of the learner."""

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qlearn import DQN
from qlearn.agents.dqn import DQNLearner
from qlearn.agents.engine import (
    TorchEngine,
    UpdateEngine,
    UpdateResult,
    batch_rows,
    raise_on_nonfinite,
)
from qlearn.agents.numpy_mlp import NumpyMLPEngine
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import TrainingError

DATA = Path(__file__).parent.parent / "data"
BOX = EnvSpec("box", (4,), "float32", 2)
ENGINES = {"torch": TorchEngine, "numpy": NumpyMLPEngine}


def learner(engine: str, n: int = 200, **flags) -> DQNLearner:
    """A learner whose replay holds the same random transitions for every config."""
    agent = DQNLearner(BOX, DQNConfig(engine=engine, batch_size=8, seed=1, **flags))
    assert isinstance(agent.engine, ENGINES[engine])
    rng = np.random.default_rng(0)
    for _ in range(n):
        obs, nxt = rng.standard_normal((2, 4)).astype(np.float32)
        agent.replay.add_one(
            obs, int(rng.integers(2)), 3 * float(rng.random()), nxt, rng.random() < 0.2
        )
    return agent


def forward(net: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(obs)).numpy()


def move_target(engine: UpdateEngine, seed: int) -> None:
    """Make the target network differ from the online one, through the state dict."""
    state = {k: v.clone() for k, v in engine.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    for key in state:
        if key.startswith("target_net."):
            state[key] += 0.5 * torch.randn(state[key].shape, generator=generator)
    engine.load_state_dict(state)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_both_engines_satisfy_the_protocol(engine: str) -> None:
    implementation = learner(engine, n=10).engine
    assert isinstance(implementation, UpdateEngine)
    for name in ("update", "sync_target", "q_values", "network", "state_dict", "load_state_dict"):
        expected = inspect.signature(getattr(UpdateEngine, name))
        actual = inspect.signature(getattr(type(implementation), name))
        assert list(actual.parameters) == list(expected.parameters), name


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize(
    "flags",
    [{"loss": "mse"}, {"loss": "huber"}, {"loss": "mse", "double_q": True}],
    ids=["mse", "huber", "double"],
)
def test_update_matches_hand_computed_loss_and_priorities(engine: str, flags: dict) -> None:
    agent = learner(engine, prioritized=True, **flags)
    move_target(agent.engine, seed=2)
    batch = agent.replay.sample(8, np.random.default_rng(1))
    batch = dataclasses.replace(batch, weights=np.ones(8, dtype=np.float32))
    q = forward(agent.q_net, batch.obs)
    q_next_target = forward(agent.target_net, batch.next_obs)
    if flags.get("double_q"):
        chosen = forward(agent.q_net, batch.next_obs).argmax(axis=1)
        next_value = q_next_target[np.arange(8), chosen]
        assert (next_value != q_next_target.max(axis=1)).any()  # the test tells them apart
    else:
        next_value = q_next_target.max(axis=1)
    y = batch.returns + batch.discounts * (1 - batch.terminated) * next_value
    q_taken = q[np.arange(8), batch.actions]
    d = q_taken - y
    huber = np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5)
    expected_loss = (huber if flags["loss"] == "huber" else d**2).mean()

    result = agent.engine.update(batch)
    assert result.num_applied == 1
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.q_mean == pytest.approx(q_taken.mean(), rel=1e-5, abs=1e-6)
    assert result.priorities is not None
    np.testing.assert_allclose(result.priorities, np.abs(d), rtol=1e-5, atol=1e-6)
    assert not np.allclose(forward(agent.q_net, batch.obs), q)  # the step moved the weights


@pytest.mark.parametrize("engine", list(ENGINES))
def test_steps_of_one_batch_equal_one_step_per_slice(engine: str) -> None:
    # update(batch, 3) takes the three steps that update() on each third would take, all
    # under the same target network.
    together, apart = learner(engine), learner(engine)
    batch = together.replay.sample(24, np.random.default_rng(4))
    result = together.engine.update(batch, 3)
    for i in range(3):
        last = apart.engine.update(batch_rows(batch, 8 * i, 8 * (i + 1)))
    assert result.num_applied == 3
    assert result.priorities is None  # not prioritized
    assert (result.loss, result.q_mean) == pytest.approx((last.loss, last.q_mean), rel=1e-6)
    for key, value in apart.engine.state_dict().items():
        torch.testing.assert_close(together.engine.state_dict()[key], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_rows_must_split_evenly_into_the_steps(engine: str) -> None:
    agent = learner(engine)
    batch = agent.replay.sample(10, np.random.default_rng(0))
    with pytest.raises(TrainingError, match="num_steps = 3 does not split a batch of 10 rows"):
        agent.engine.update(batch, 3)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_nonfinite_step_is_reported_and_skipped(engine: str) -> None:
    agent = learner(engine)
    batch = agent.replay.sample(16, np.random.default_rng(0))
    batch.returns[8:] = np.nan  # the second of two steps
    calls: list[tuple[float, int]] = []
    result = agent.engine.update(batch, 2, lambda loss, applied: calls.append((loss, applied)))
    assert len(calls) == 1 and np.isnan(calls[0][0]) and calls[0][1] == 1
    assert result.num_applied == 1 and np.isfinite(result.loss)
    assert result.metrics().keys() == {"loss", "q_mean"}
    with pytest.raises(TrainingError, match="non-finite loss"):
        agent.engine.update(batch, 2)
    assert UpdateResult(0, np.nan, np.nan).metrics() == {}
    with pytest.raises(TrainingError):
        raise_on_nonfinite(np.nan, 0)


@pytest.mark.parametrize(("saver", "loader"), [(a, b) for a in ENGINES for b in ENGINES])
def test_state_dict_round_trip_is_exact(saver: str, loader: str) -> None:
    source = learner(saver)
    source.update(3)
    source.sync_target()
    source.update(2)
    state = {k: v.clone() for k, v in source.engine.state_dict().items()}
    assert [k for k in state if k.startswith("optim.0.")] == [
        "optim.0.step",
        "optim.0.exp_avg",
        "optim.0.exp_avg_sq",
    ]
    target = DQNLearner(BOX, DQNConfig(engine=loader, batch_size=8, seed=7))
    target.engine.load_state_dict(state)
    restored = target.engine.state_dict()
    assert list(restored) == list(state)
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    obs = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_array_equal(target.engine.q_values(obs), source.engine.q_values(obs))
    np.testing.assert_array_equal(forward(target.target_net, obs), forward(source.target_net, obs))


@pytest.mark.parametrize("engine", list(ENGINES))
def test_load_refuses_a_state_that_does_not_fit(engine: str) -> None:
    agent = learner(engine, n=10)
    state = dict(agent.engine.state_dict())
    with pytest.raises(RuntimeError, match=r"body\.0\.weight"):
        agent.engine.load_state_dict({k: v for k, v in state.items() if k != "q_net.body.0.weight"})
    if engine == "numpy":
        agent.update(1)
        state = dict(agent.engine.state_dict())
        del state["optim.1.exp_avg"]
        with pytest.raises(KeyError, match=r"optim\.1\.exp_avg"):
            agent.engine.load_state_dict(state)
        state = dict(agent.engine.state_dict())
        state["optim.0.exp_avg"] = torch.zeros(3)
        with pytest.raises(ValueError, match=r"optim\.0\.exp_avg has shape \(3,\)"):
            agent.engine.load_state_dict(state)


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_checkpoint_from_before_the_engine_redesign_loads_and_continues(name: str) -> None:
    # Written by the code before the UpdateEngine protocol (see tests/data/README.md): the
    # weights, Adam moments and replay load, act as they did, and two more updates give the
    # very tensors that code gave.
    folder = DATA / f"pre_engine_{name}"
    model = DQN.load(folder / "checkpoint", with_replay=True)
    agent = model.learner
    assert isinstance(agent.engine, ENGINES[name])
    expected = json.loads((folder / "expected.json").read_text())
    obs = np.asarray(expected["obs"], dtype=np.float32)
    np.testing.assert_array_equal(
        agent.q_values(obs), np.asarray(expected["q_values"], dtype=np.float32)
    )
    agent.update(2, beta=0.5)
    after = load_file(folder / "after_2_updates.safetensors")
    actual = agent.tensors()
    assert set(actual) == set(after)
    for key, value in after.items():
        assert torch.equal(actual[key], value), key
