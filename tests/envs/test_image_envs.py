"""MinAtar and Atari through make_env / make_vector_env, the CNNs, the frame buffer and DQN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qlearn import DQN
from qlearn.agents.dqn import pick_network
from qlearn.cli import main
from qlearn.envs import EnvSpec, env_spec, make_env, make_vector_env, stacked_frame_count
from qlearn.networks import QNetwork
from qlearn.presets import load_preset
from qlearn.replay import (
    FlatStorage,
    FrameStackStorage,
    PrioritizedSampler,
    UniformSampler,
    make_memory,
)

MINATAR_GAMES = {  # game: (channels, actions of the -v1 minimal action set)
    "Asterix": (4, 5),
    "Breakout": (4, 3),
    "Freeway": (7, 3),
    "Seaquest": (10, 6),
    "SpaceInvaders": (6, 4),
}


def needs_minatar() -> None:
    pytest.importorskip("minatar", reason="MinAtar tests need qlearn[minatar]")


def needs_atari() -> None:
    pytest.importorskip("ale_py", reason="Atari tests need qlearn[atari]")
    pytest.importorskip("cv2", reason="AtariPreprocessing needs opencv-python(-headless)")


@pytest.mark.parametrize("game", sorted(MINATAR_GAMES))
def test_minatar_observations_are_channels_first_uint8_zero_one(game: str) -> None:
    needs_minatar()
    channels, num_actions = MINATAR_GAMES[game]
    env = make_env(f"MinAtar/{game}-v1")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape == (channels, 10, 10)
    assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1} and obs.any()
    assert env.action_space.n == num_actions  # type: ignore[attr-defined]
    obs, *_ = env.step(0)
    assert obs.shape == (channels, 10, 10) and obs.dtype == np.uint8
    assert stacked_frame_count(env) == 0  # channels, not a stack of frames
    spec = env_spec(env.observation_space, env.action_space)
    assert pick_network(load_preset("minatar"), spec) == "minatar_cnn"
    assert pick_network(load_preset("minatar").replace(network="auto"), spec) == "minatar_cnn"
    env.close()


def test_minatar_v0_has_all_six_actions_and_v1_the_minimal_set() -> None:
    needs_minatar()
    with pytest.warns(DeprecationWarning):  # Gymnasium flags v0 as superseded by v1
        v0 = make_env("MinAtar/Breakout-v0")
    assert v0.action_space.n == 6  # type: ignore[attr-defined]
    assert make_env("MinAtar/Breakout-v1").action_space.n == 3  # type: ignore[attr-defined]


def test_minatar_vector_env_and_network_shapes() -> None:
    needs_minatar()
    envs = make_vector_env("MinAtar/SpaceInvaders-v1", 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 6, 10, 10) and obs.dtype == np.uint8
    net = QNetwork((6, 10, 10), 4, (128,), torso="minatar_cnn")
    assert net(torch.from_numpy(obs)).shape == (2, 4)
    # The MinAtar paper's network: 3x3 conv of 16, stride 1, then 128 units.
    conv = net.torso.conv  # type: ignore[union-attr]
    assert (conv.out_channels, conv.kernel_size, conv.stride) == (16, (3, 3), (1, 1))
    envs.close()


def test_minatar_breakout_dqn_learns_saves_and_loads(tmp_path: Path) -> None:
    needs_minatar()
    config = load_preset("minatar").replace(
        total_steps=300, learning_starts=64, buffer_size=1_000, eval_interval=0
    )
    agent = DQN("MinAtar/Breakout-v1", config).learn()
    assert type(agent.learner.replay.storage) is FlatStorage  # channels, not stacked frames
    assert len(agent.learner.replay) == 300 and agent.learner.num_updates == 60  # 64, 68, ..., 300
    agent.save(tmp_path / "model")
    loaded = DQN.load(tmp_path / "model")
    obs = agent.learner.replay.sample(16, np.random.default_rng(0)).obs
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    assert loaded.spec == agent.spec and loaded.counters.step == 300


def test_cli_trains_minatar_breakout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_minatar()
    argv = ["train", "MinAtar/Breakout-v1", "--preset", "minatar", "--steps", "150"]
    argv += ["--set", "learning_starts=64", "--set", "eval_episodes=1", "--no-progress"]
    argv += ["--run-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    assert (exit_info.value.code or 0) == 0, out.err
    assert "trained 150 steps" in out.out


def test_atari_pong_is_preprocessed_and_stacked() -> None:
    needs_atari()
    env = make_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.action_space.n == 6  # type: ignore[attr-defined]  # minimal set, not 18
    ale = env.unwrapped.ale  # type: ignore[attr-defined]
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    made_with = env.unwrapped.spec.kwargs  # type: ignore[union-attr]
    # ALE v5's sticky actions and minimal action set; AtariPreprocessing skips 4 frames itself,
    # on an env that skips none.
    assert made_with["repeat_action_probability"] == 0.25
    assert made_with["full_action_space"] is False and made_with["frameskip"] == 1
    # The reset frame fills the whole stack (FrameStackObservation's "reset" padding).
    assert all(np.array_equal(obs[0], obs[i]) for i in range(4))
    assert stacked_frame_count(env) == 4
    assert stacked_frame_count(make_env("ALE/Pong-v5", frame_stack=2)) == 2
    spec = env_spec(env.observation_space, env.action_space, frame_stack=stacked_frame_count(env))
    assert spec.frame_stack == 4
    # Checkpoints written before the field existed lack it; their spec still equals this one.
    old = {k: v for k, v in spec.to_dict().items() if k != "frame_stack"}
    assert EnvSpec.from_dict(old).frame_stack == 0 and EnvSpec.from_dict(old) == spec
    assert EnvSpec.from_dict(spec.to_dict()).frame_stack == 4
    assert pick_network(load_preset("atari").replace(network="auto"), spec) == "nature_cnn"
    net = QNetwork(spec.obs_shape, 6, (512,), torso="nature_cnn")
    assert net(torch.from_numpy(obs[None])).shape == (1, 6)
    env.close()


def test_frame_buffer_returns_the_stacks_pong_produced() -> None:
    needs_atari()
    env = make_env("ALE/Pong-v5")
    frames = make_memory(50, (4, 84, 84), np.uint8, 6, 0.99, stacked_frames=True)
    oracle = make_memory(50, (4, 84, 84), np.uint8, 6, 0.99)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(80):
        action = int(rng.integers(6))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for buffer in (frames, oracle):
            buffer.add_one(obs, action, float(reward), next_obs, terminated)
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    slots = np.arange(50)
    np.testing.assert_array_equal(frames.gather(slots).obs, oracle.gather(slots).obs)
    np.testing.assert_array_equal(frames.gather(slots).next_obs, oracle.gather(slots).next_obs)
    assert frames.storage.num_frames_written <= 81  # one frame per step, plus the reset frame
    env.close()


@pytest.mark.parametrize("prioritized", [False, True])
def test_atari_pong_dqn_smoke_run_uses_the_frame_buffer(prioritized: bool) -> None:
    needs_atari()
    config = load_preset("atari").replace(
        total_steps=200,
        buffer_size=500,
        learning_starts=100,
        batch_size=8,
        hidden_sizes=[32],
        eval_interval=0,
        prioritized=prioritized,
    )
    agent = DQN("ALE/Pong-v5", config).learn()
    replay = agent.learner.replay
    assert type(replay.storage) is FrameStackStorage
    assert type(replay.sampler) is (PrioritizedSampler if prioritized else UniformSampler)
    assert agent.spec.frame_stack == 4
    assert len(replay) == 200 and agent.learner.num_updates == 26  # steps 100, 104, ..., 200
    batch = replay.sample(4, np.random.default_rng(0))
    assert batch.obs.shape == batch.next_obs.shape == (4, 4, 84, 84)
    assert batch.obs.dtype == np.uint8
    # ~one 84x84 frame per transition, not eight.
    assert replay.storage.num_frames_written < 1.1 * len(replay) + 10
