"""ONNX export: every network kind round-trips through onnxruntime, known Q-values come out of
the graph exactly, the self-check refuses a wrong graph, and the sidecar says what clients need."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx

from qlearn import DQN, DQNConfig, __version__
from qlearn import export as export_module
from qlearn.errors import CheckpointError, ConfigError, ExportError
from qlearn.export import (
    TOLERANCE,
    check_output_path,
    observations_from_space,
    onnx_session,
    read_sidecar,
    sidecar_path,
)

TINY = {"hidden_sizes": (16, 16), "buffer_size": 100, "learning_starts": 10}
NUM_CHECKS = 2_000  # the default is 10,000; the kinds below are checked on fewer to stay fast


class TinyImages(gym.Env):
    """Random uint8 frames (2, 36, 36), the smallest the Nature CNN takes; 20-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (2, 36, 36), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self._frame(), 1.0, self.t >= 20, False, {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (2, 36, 36), dtype=np.uint8)


def make_agent(kind: str) -> DQN:
    """A tiny untrained agent of each network kind qlearn trains."""
    if kind == "minatar_cnn":
        pytest.importorskip("minatar")
        return DQN("MinAtar/Breakout-v1", DQNConfig(**TINY, network="minatar_cnn"))
    if kind == "nature_cnn":
        return DQN(TinyImages(), DQNConfig(**TINY, network="nature_cnn"))
    if kind == "one_hot":
        return DQN("FrozenLake-v1", DQNConfig(**TINY))
    flags = {
        "mlp": {},
        "dueling": {"dueling": True},
        "noisy": {"noisy": True},
        "c51": {"distributional": "c51"},
        "qr": {"distributional": "qr", "dueling": True},
    }[kind]
    return DQN("CartPole-v1", DQNConfig(**TINY, **flags))


def greedy_q(agent: DQN, obs: np.ndarray) -> np.ndarray:
    """The agent's own Q-values with the noise off, as it acts greedily."""
    agent.learner.q_net.eval()
    try:
        return agent.learner.q_values(obs)
    finally:
        agent.learner.q_net.train()


def assert_greedy(actions: np.ndarray, q: np.ndarray) -> None:
    """Each action is a greedy one under `q`: its Q-value is the row's maximum up to the
    tolerance (an exact tie, or two values a rounding apart, may go either way)."""
    chosen = q[np.arange(len(q)), actions]
    slack = TOLERANCE * np.maximum(1.0, np.abs(q).max(axis=1))
    assert (chosen >= q.max(axis=1) - slack).all(), (actions, q)


KINDS = ["mlp", "dueling", "noisy", "c51", "qr", "one_hot", "minatar_cnn", "nature_cnn"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """exported(kind) -> (agent, report): each kind exported once for the whole module."""
    cache: dict[str, tuple[DQN, Any]] = {}
    folder = tmp_path_factory.mktemp("kinds")

    def get(kind: str) -> tuple[DQN, Any]:
        if kind not in cache:
            agent = make_agent(kind)
            cache[kind] = agent, agent.export(folder / f"{kind}.onnx", num_checks=NUM_CHECKS)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_every_network_kind_round_trips(kind: str, exported: Any) -> None:
    agent, report = exported(kind)
    assert report.num_checked == NUM_CHECKS
    assert report.max_scaled_diff <= TOLERANCE
    # Independently of the export's own check: fresh observations, batches of 1 and 37.
    session = onnx_session(report.onnx_path)
    env = agent.make_eval_env() if agent.env_id else TinyImages()
    rng = np.random.default_rng(123)
    for batch in (1, 37):
        obs = observations_from_space(agent.spec, env.observation_space, batch, rng)
        q_onnx, actions = session.run(None, {"obs": obs})
        q_torch = greedy_q(agent, obs)
        assert q_onnx.shape == (batch, agent.spec.num_actions) and q_onnx.dtype == np.float32
        assert actions.shape == (batch,) and actions.dtype == np.int64
        np.testing.assert_allclose(q_onnx, q_torch, rtol=TOLERANCE, atol=TOLERANCE)
        assert_greedy(actions, q_torch)


def test_noisy_net_exports_its_mean_weights(exported: Any) -> None:
    agent, report = exported("noisy")
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    assert agent.learner.q_net.training  # the export left the agent as it was
    with torch.no_grad():
        noisy_q = agent.learner.q_net(torch.from_numpy(obs)).numpy()  # training mode: noise on
    q_onnx, _ = onnx_session(report.onnx_path).run(None, {"obs": obs})
    np.testing.assert_allclose(q_onnx, greedy_q(agent, obs), rtol=TOLERANCE, atol=TOLERANCE)
    assert np.abs(q_onnx - noisy_q).max() > 1e-3  # the noise was really off in the export


def test_a_q_table_comes_out_of_the_graph_exactly(tmp_path: Path) -> None:
    # FrozenLake's 16 states are one-hot encoded in the graph. With an identity first layer and
    # the Q-table as the output layer, Q(s) is row s of the table.
    agent = DQN("FrozenLake-v1", DQNConfig(hidden_sizes=(16,), buffer_size=100))
    table = (np.arange(64, dtype=np.float32).reshape(16, 4) * 7 % 64) / 8 - 3
    # Through the learner's state: the numpy engine owns the weights, not the torch module.
    tensors = agent.learner.tensors()
    tensors["q_net.body.0.weight"] = torch.eye(16)
    tensors["q_net.body.0.bias"] = torch.zeros(16)
    tensors["q_net.streams.0.weight"] = torch.from_numpy(table.T.copy())
    tensors["q_net.streams.0.bias"] = torch.zeros(4)
    agent.learner.load_tensors(tensors)
    report = agent.export(tmp_path / "table.onnx", num_checks=NUM_CHECKS)
    q, actions = onnx_session(report.onnx_path).run(None, {"obs": np.arange(16, dtype=np.int64)})
    np.testing.assert_array_equal(q, table)
    np.testing.assert_array_equal(actions, table.argmax(axis=1))


@pytest.mark.parametrize(("kind", "expected"), [("c51", [5.0, 10.0]), ("qr", [2.5, 3.5])])
def test_distributional_heads_export_their_expected_q(
    kind: str, expected: list[float], tmp_path: Path
) -> None:
    # Zero weights, so the output layer's biases are the atoms' logits or quantiles.
    # C51 over the support 0..10 (6 atoms): uniform logits give Q = 5; a logit of 100 on the top
    # atom gives Q = 10 (its probability is 1 to float32 precision). QR: quantiles 0..5 give
    # Q = 2.5, and 1..6 give 3.5.
    flags = {"distributional": kind, "num_atoms": 6, "v_min": 0.0, "v_max": 10.0}
    agent = DQN("CartPole-v1", DQNConfig(hidden_sizes=(8,), buffer_size=100, **flags))
    last = [m for m in agent.learner.q_net.modules() if isinstance(m, torch.nn.Linear)][-1]
    if kind == "c51":
        bias = torch.tensor([0.0] * 6 + [0.0] * 5 + [100.0])
    else:
        bias = torch.cat([torch.arange(6.0), torch.arange(6.0) + 1])
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)
    report = agent.export(tmp_path / f"{kind}.onnx", num_checks=NUM_CHECKS)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    q, actions = onnx_session(report.onnx_path).run(None, {"obs": obs})
    np.testing.assert_allclose(q, np.tile(expected, (5, 1)), rtol=1e-6)
    np.testing.assert_array_equal(actions, 1)


# ---------------------------------------------------------------------- the file and sidecar


@pytest.fixture(scope="module")
def cartpole_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[DQN, Path, Any]:
    """A CartPole agent trained for 600 steps, exported with the default 10,000 checks."""
    agent = DQN("CartPole-v1", DQNConfig(**TINY, total_steps=600, eval_interval=0)).learn()
    path = tmp_path_factory.mktemp("export") / "policy.onnx"
    return agent, path, agent.export(path)


def test_the_export_is_checked_on_10000_observations(cartpole_export: Any) -> None:
    _, path, report = cartpole_export
    assert (report.num_from_space, report.num_from_episodes) == (5_000, 5_000)
    assert report.max_scaled_diff <= TOLERANCE
    assert report.num_action_ties == 0
    assert read_sidecar(path)["check"] == report.summary()


def test_sidecar_says_what_a_client_needs(cartpole_export: Any) -> None:
    _, path, report = cartpole_export
    assert report.sidecar_path == sidecar_path(path) == path.with_name("policy.onnx.json")
    sidecar = json.loads(report.sidecar_path.read_text())
    assert sidecar["format"] == "qlearn-onnx-policy" and sidecar["format_version"] == 1
    assert sidecar["qlearn_version"] == __version__
    assert sidecar["env_id"] == "CartPole-v1"
    space = gym.make("CartPole-v1").observation_space
    assert sidecar["observation_space"]["type"] == "Box"
    assert sidecar["observation_space"]["shape"] == [4]
    assert sidecar["observation_space"]["dtype"] == "float32"
    high = [np.inf if v == "inf" else v for v in sidecar["observation_space"]["high"]]
    np.testing.assert_array_equal(np.array(high, dtype=np.float32), space.high)
    assert sidecar["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
    assert sidecar["input"] == {"name": "obs", "dtype": "float32", "shape": ["batch", 4]}
    assert sidecar["outputs"]["action"] == {"dtype": "int64", "shape": ["batch"]}
    assert sidecar["preprocessing"] == {"env_wrappers": [], "in_graph": []}
    assert sidecar["network"]["torso"] == "mlp" and sidecar["network"]["hidden_sizes"] == [16, 16]
    data = path.read_bytes()
    assert sidecar["onnx"]["bytes"] == len(data)
    assert sidecar["onnx"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "dynamo=True" in sidecar["onnx"]["exporter"]


def test_graph_is_valid_onnx_with_a_dynamic_batch(cartpole_export: Any) -> None:
    _, path, _ = cartpole_export
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "obs" and dims[0].dim_param and dims[1].dim_value == 4
    assert [o.name for o in model.graph.output] == ["q_values", "action"]


def test_preprocessing_is_recorded_for_images_and_discrete_states(exported: Any) -> None:
    sidecar = read_sidecar(exported("nature_cnn")[1].onnx_path)
    assert sidecar["preprocessing"]["in_graph"] == ["cast to float32", "divide by 255"]
    assert sidecar["input"] == {"name": "obs", "dtype": "uint8", "shape": ["batch", 2, 36, 36]}
    assert sidecar["observation_space"]["low"] == 0 and sidecar["observation_space"]["high"] == 255
    sidecar = read_sidecar(exported("one_hot")[1].onnx_path)
    assert sidecar["preprocessing"]["in_graph"] == ["one-hot over 16 states"]
    assert sidecar["input"] == {"name": "obs", "dtype": "int64", "shape": ["batch"]}


def test_export_uses_the_torch_export_based_exporter_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []
    real = torch.onnx.export

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    capfd.readouterr()
    make_agent("mlp").export(tmp_path / "p.onnx", num_checks=NUM_CHECKS)
    assert len(calls) == 1
    assert calls[0]["dynamo"] is True  # passed explicitly: torch 2.9 changed the default
    assert capfd.readouterr() == ("", "")  # the library never prints


# ---------------------------------------------------------------------- refusals


def test_a_graph_that_disagrees_with_torch_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_module._export_graph

    def perturbed(policy: Any, example: np.ndarray, path: Path) -> None:
        policy = export_module.copy.deepcopy(policy)
        with torch.no_grad():
            next(policy.parameters()).mul_(1.001)  # a graph slightly unlike the agent
        real(policy, example, path)

    monkeypatch.setattr(export_module, "_export_graph", perturbed)
    with pytest.raises(ExportError, match="onnxruntime and the exported torch module disagree"):
        make_agent("mlp").export(tmp_path / "p.onnx", num_checks=NUM_CHECKS)
    assert list(tmp_path.iterdir()) == []  # no graph, no sidecar, no temporary


@pytest.mark.parametrize(
    ("out", "fmt", "message"),
    [
        ("dir", "onnx", "is a directory"),
        ("policy.pt", "onnx", "does not end in .onnx"),
        ("policy.onnx", "tflite", "format = 'tflite' is unknown; allowed: onnx"),
        ("a_file/policy.onnx", "onnx", "which is a file"),
    ],
)
def test_bad_output_paths(out: str, fmt: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match=message):
        check_output_path(tmp_path / out, fmt)


def test_a_tampered_graph_or_missing_sidecar_is_refused(cartpole_export: Any) -> None:
    _, path, _ = cartpole_export
    copy = path.with_name("copy.onnx")
    copy.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=r"has no sidecar 'copy\.onnx\.json'"):
        read_sidecar(copy)
    sidecar_path(copy).write_text(sidecar_path(path).read_text())
    read_sidecar(copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        read_sidecar(copy)
    sidecar_path(copy).write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        read_sidecar(copy)
