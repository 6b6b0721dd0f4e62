"""The policy server: request checks against known answers, then the real server (uvicorn in a
child process on a free local port) driven over HTTP with good and malformed requests."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from qlearn import DQN, DQNConfig
from qlearn.envs import EnvSpec
from qlearn.export import TOLERANCE, onnx_session, read_sidecar
from qlearn.serve import RequestError, ServerProcess, _check_body, parse_observations

CARTPOLE = EnvSpec("box", (4,), "float32", 2)
STATES = EnvSpec("discrete", (16,), "int64", 4)
IMAGES = EnvSpec("box", (2, 3, 3), "uint8", 3)
MAX_BATCH = 64
MAX_BODY = 65_536
JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------- request checks


def test_one_observation_and_a_batch_are_told_apart() -> None:
    batch, single = parse_observations([0.5, -1, 2, 3.25], CARTPOLE, MAX_BATCH)
    assert single and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, [[0.5, -1, 2, 3.25]])
    batch, single = parse_observations([[0, 0, 0, 0], [1, 2, 3, 4]], CARTPOLE, MAX_BATCH)
    assert not single and batch.shape == (2, 4) and batch.dtype == np.float32
    batch, single = parse_observations(7, STATES, MAX_BATCH)
    assert single and batch.tolist() == [7] and batch.dtype == np.int64
    batch, single = parse_observations([0, 15, 2.0], STATES, MAX_BATCH)
    assert not single and batch.tolist() == [0, 15, 2] and batch.dtype == np.int64
    frame = np.arange(18).reshape(2, 3, 3) * 15
    batch, single = parse_observations(frame.tolist(), IMAGES, MAX_BATCH)
    assert single and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], frame)


@pytest.mark.parametrize(
    ("obs", "spec", "status", "message"),
    [
        ([1, 2, 3], CARTPOLE, 422, "obs has shape (3,); allowed: shape (4,) for one observation"),
        ([[1, 2, 3, 4]] * 2 + [[1, 2]], CARTPOLE, 422, "not a rectangular array"),
        ([[[1, 2, 3, 4]]], CARTPOLE, 422, "obs has shape (1, 1, 4)"),
        ([], CARTPOLE, 422, "obs is an empty list"),
        ([0.0] * 3 + [float("nan")], CARTPOLE, 422, "NaN or infinity"),
        ([0.0] * 3 + [float("inf")], CARTPOLE, 422, "NaN or infinity"),
        ([0.0] * 3 + [1e39], CARTPOLE, 422, "beyond float32's range"),
        (["1", 2, 3, 4], CARTPOLE, 422, "obs holds strings"),
        ([None, 2, 3, 4], CARTPOLE, 422, "obs holds null"),
        ([True, False, True, True], CARTPOLE, 422, "true/false"),
        ([2**70, 1, 1, 1], CARTPOLE, 422, "integers too large"),
        ({"a": 1}, CARTPOLE, 422, "obs holds null, objects"),
        ([[0.0] * 4] * (MAX_BATCH + 1), CARTPOLE, 413, f"at most {MAX_BATCH} per request"),
        (16, STATES, 422, "outside 0..15"),
        ([-1, 3], STATES, 422, "outside 0..15"),
        (1.5, STATES, 422, "non-integer"),
        ([[1, 2]], STATES, 422, "an integer (the state) for one observation"),
        (np.full((2, 3, 3), 256).tolist(), IMAGES, 422, "outside 0..255"),
        (np.full((2, 3, 3), 0.5).tolist(), IMAGES, 422, "non-integer"),
    ],
)
def test_bad_observations_are_refused_naming_the_problem(
    obs: Any, spec: EnvSpec, status: int, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_observations(obs, spec, MAX_BATCH)
    assert caught.value.status == status
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"obs": [NaN, 0, 0, 0]}', "application/json", 422, "obs holds NaN"),
        (b'{"obs": [-Infinity, 0, 0, 0]}', "application/json", 422, "obs holds -Infinity"),
        (b'{"obs": [0.1, 0.2', "application/json", 400, "not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
        (b'{"obs": [0, 0, 0, 0], "x": 1}', "application/json", 422, "exactly one key"),
        (b"[1, 2]", "application/json", 422, "the body is a JSON list"),
        (b'{"obs": [0, 0, 0, 0]}', "text/plain", 415, "Content-Type: application/json"),
        (b'{"obs": [0, 0, 0, 0]}', None, 415, "Content-Type is None"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(
    body: bytes, content_type: str | None, status: int, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        _check_body(body, content_type)
    assert caught.value.status == status
    assert message in caught.value.message


def test_a_good_body_gives_its_obs() -> None:
    assert _check_body(b'{"obs": [1, 2.5]}', "application/json; charset=utf-8") == [1, 2.5]


# ---------------------------------------------------------------------- the real server


def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One HTTP request on a fresh connection: (status, decoded JSON body or None)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {}, **kwargs)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def predict(url: str, obs: Any) -> tuple[int, Any]:
    return call(url, "POST", "/predict", json.dumps({"obs": obs}), JSON)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DQN, Path, Path]:
    """A CartPole agent trained for 600 steps: (agent, its run dir, its ONNX export)."""
    root = tmp_path_factory.mktemp("serve")
    config = DQNConfig(
        hidden_sizes=(16, 16), buffer_size=1_000, learning_starts=100, total_steps=600,
        eval_interval=0, checkpoint_interval=0,
    )  # fmt: skip
    agent = DQN("CartPole-v1", config, run_dir=root / "run").learn()
    onnx_path = root / "policy.onnx"
    agent.export(onnx_path, num_checks=2_000)
    return agent, root / "run", onnx_path


@pytest.fixture(scope="module")
def server(trained: tuple[DQN, Path, Path]) -> Iterator[ServerProcess]:
    """`qlearn serve policy.onnx` on a free port of 127.0.0.1, stopped after the module."""
    limits = ["--max-batch", str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY)]
    with ServerProcess(trained[2], args=limits) as process:
        yield process


def episode_observations(n: int) -> np.ndarray:
    from qlearn.envs import make_env

    env = make_env("CartPole-v1")
    obs, _ = env.reset(seed=3)
    seen = []
    for t in range(n):
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(t % 2)
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(seen)


def test_server_binds_to_loopback_and_is_healthy(server: ServerProcess) -> None:
    assert urllib.parse.urlsplit(server.url).hostname == "127.0.0.1"
    assert call(server.url, "GET", "/health") == (200, {"status": "ok"})


def test_info_describes_the_policy(server: ServerProcess, trained: Any) -> None:
    status, info = call(server.url, "GET", "/info")
    assert status == 200
    sidecar = read_sidecar(trained[2])
    assert info["env_id"] == "CartPole-v1"
    assert info["observation_space"] == sidecar["observation_space"]
    assert info["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
    assert info["input"] == {"name": "obs", "dtype": "float32", "shape": ["batch", 4]}
    assert info["model"]["format"] == "onnx"
    assert info["model"]["sha256"] == sidecar["onnx"]["sha256"]
    assert info["limits"] == {"max_batch": MAX_BATCH, "max_body_bytes": MAX_BODY}


def test_predictions_match_onnxruntime_and_the_agent(server: ServerProcess, trained: Any) -> None:
    agent, _, onnx_path = trained
    obs = episode_observations(MAX_BATCH)
    q_local, actions_local = onnx_session(onnx_path).run(None, {"obs": obs})
    status, answer = predict(server.url, obs.tolist())
    assert status == 200
    np.testing.assert_allclose(answer["q_values"], q_local, rtol=1e-6, atol=1e-6)
    assert answer["actions"] == actions_local.tolist()
    np.testing.assert_allclose(
        answer["q_values"], agent.learner.q_values(obs), rtol=TOLERANCE, atol=TOLERANCE
    )
    for i in (0, 17):
        status, answer = predict(server.url, obs[i].tolist())
        assert status == 200
        assert answer["action"] == int(actions_local[i])
        np.testing.assert_allclose(answer["q_values"], q_local[i], rtol=1e-6, atol=1e-6)


MALFORMED = [
    ("wrong shape", b'{"obs": [0.1, 0.2, 0.3]}', JSON, 422, "obs has shape (3,)"),
    ("NaN", b'{"obs": [NaN, 0.2, 0.3, 0.4]}', JSON, 422, "obs holds NaN"),
    ("huge number", b'{"obs": [1e400, 0, 0, 0]}', JSON, 422, "NaN or infinity"),
    ("strings", b'{"obs": ["a", 0.2, 0.3, 0.4]}', JSON, 422, "obs holds strings"),
    ("truncated JSON", b'{"obs": [0.1, 0.2', JSON, 400, "not valid JSON"),
    ("empty body", b"", JSON, 400, "not valid JSON"),
    ("no obs", b'{"observation": [0, 0, 0, 0]}', JSON, 422, "exactly one key"),
    ("form body", b"obs=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
    (
        "batch too big",
        json.dumps({"obs": [[0.0] * 4] * (MAX_BATCH + 1)}).encode(),
        JSON,
        413,
        f"at most {MAX_BATCH}",
    ),
    ("body too big", b" " * (MAX_BODY + 1), JSON, 413, f"over the limit of {MAX_BODY} bytes"),
]


@pytest.mark.parametrize(("name", "body", "headers", "status", "message"), MALFORMED)
def test_malformed_requests_get_a_4xx_naming_the_problem(
    server: ServerProcess,
    name: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got, answer = call(server.url, "POST", "/predict", body, headers)
    assert got == status, (name, answer)
    assert message in answer["detail"], (name, answer)


def test_a_streamed_body_over_the_limit_is_cut_off(server: ServerProcess) -> None:
    # Chunked transfer: no Content-Length, so the server counts the bytes as they come.
    chunks = (b" " * 8_192 for _ in range(MAX_BODY // 8_192 + 2))
    status, answer = call(server.url, "POST", "/predict", chunks, JSON, encode_chunked=True)
    assert status == 413
    assert "over the limit" in answer["detail"]


def test_unknown_paths_and_methods(server: ServerProcess) -> None:
    assert call(server.url, "GET", "/nope")[0] == 404
    assert call(server.url, "GET", "/predict")[0] == 405
    assert call(server.url, "POST", "/health")[0] == 405


def test_the_server_stays_up_and_right_after_bad_requests(server: ServerProcess) -> None:
    for _ in range(3):
        for _, body, headers, status, _ in MALFORMED:
            assert call(server.url, "POST", "/predict", body, headers)[0] == status
    assert server.process is not None and server.process.poll() is None
    assert call(server.url, "GET", "/health") == (200, {"status": "ok"})
    status, answer = predict(server.url, [0.0, 0.0, 0.0, 0.0])
    assert status == 200 and answer["action"] in (0, 1)


def test_a_run_dir_is_served_with_torch(trained: Any) -> None:
    agent, run_dir, _ = trained
    obs = episode_observations(10)
    with ServerProcess(run_dir) as process:
        status, info = call(process.url, "GET", "/info")
        assert status == 200
        assert info["model"]["format"] == "qlearn-checkpoint"
        assert info["model"]["checkpoint"] == "final" and info["model"]["step"] == 600
        status, answer = predict(process.url, obs.tolist())
        assert status == 200
        assert answer["actions"] == agent.predict(obs).tolist()
        np.testing.assert_allclose(answer["q_values"], agent.learner.q_values(obs), rtol=1e-6)
        assert predict(process.url, [1.0, 2.0])[0] == 422
    # Stopped by SIGTERM, not SIGKILL: uvicorn shuts down, then re-raises the signal.
    assert process.process is not None and process.process.returncode in (0, -15)
