"""Training refuses bad input with clear errors: NaN/inf from the env, a diverging loss or
weights, an unwritable run dir, a replay buffer larger than memory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.errors import ConfigError, TrainingError
from qlearn.replay import uniform
from qlearn.train import DQN

SMALL = DQNConfig(
    total_steps=1_500,
    hidden_sizes=(16,),
    buffer_size=2_000,
    batch_size=16,
    learning_starts=100,
    eval_interval=0,
)


class Spoil(gym.Wrapper):
    """Returns `value` as the observation (or reward) from the `at`-th step on."""

    def __init__(self, env: gym.Env, at: int, value: float, where: str = "obs") -> None:
        super().__init__(env)
        self.at, self.value, self.where = at, value, where
        self.num_steps = 0

    def step(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.num_steps += 1
        if self.num_steps >= self.at:
            if self.where == "obs":
                obs = np.full_like(obs, self.value)
            else:
                reward = reward * self.value if self.where == "scale" else self.value
        return obs, reward, terminated, truncated, info


def all_finite(agent: DQN) -> bool:
    return all(
        bool(torch.isfinite(v).all())
        for v in agent.agent.tensors().values()
        if v.is_floating_point()
    )


# ---------------------------------------------------------------------- env output


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        (np.nan, "obs", "observation"),
        (np.inf, "obs", "observation"),
        (np.nan, "reward", "reward"),
        (-np.inf, "reward", "reward"),
        (1e39, "reward", "reward"),  # finite in float64, inf once stored as float32
    ],
)
def test_env_returning_nonfinite_values(value: float, where: str, what: str) -> None:
    env = Spoil(gym.make("CartPole-v1"), at=37, value=value, where=where)
    agent = DQN(env, SMALL)
    with pytest.raises(TrainingError) as info:
        agent.learn()
    assert str(info.value).startswith(f"env 'CartPole-v1' returned a non-finite {what} at step 37")
    assert agent.counters.step == 36  # the bad transition was not stored or counted
    assert len(agent.agent.replay) == 36


def test_vector_env_returning_nan_names_the_env() -> None:
    env_id = "QlearnTestNaNCartPole-v0"
    gym.register(
        env_id, lambda **_: Spoil(gym.make("CartPole-v1"), 50, np.nan), max_episode_steps=500
    )
    try:
        agent = DQN(env_id, SMALL.replace(num_envs=2))
        with pytest.raises(
            TrainingError, match=rf"env '{env_id}' returned a non-finite observation"
        ):
            agent.learn()
    finally:
        del gym.registry[env_id]


# ---------------------------------------------------------------------- divergence


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """Rewards of 1e30 are finite in float32, but their squared TD error is not: the MSE loss
    turns inf, training stops, and the checkpoints written before are intact."""
    env = Spoil(gym.make("CartPole-v1"), at=700, value=1e30, where="scale")
    agent = DQN(
        env,
        SMALL.replace(checkpoint_interval=250, checkpoint_max_overhead=None, loss="mse"),
        run_dir=tmp_path,
    )
    with pytest.raises(TrainingError, match=r"non-finite loss \((inf|nan)\) at update \d+; "):
        agent.learn()
    failed_at = agent.counters.step
    assert 700 <= failed_at < SMALL.total_steps
    saved = checkpoint.checkpoint_dirs(tmp_path)
    assert [p.name for p in saved] == ["step_0000000250", "step_0000000500"]
    latest = DQN.load(checkpoint.latest_checkpoint(tmp_path), with_replay=True)
    assert all_finite(latest)
    assert np.isfinite(latest.agent.replay.rewards).all()
    assert not (tmp_path / "final").exists()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_skip_mode_skips_nonfinite_updates_with_a_warning() -> None:
    env = Spoil(gym.make("CartPole-v1"), at=700, value=1e30, where="scale")
    agent = DQN(env, SMALL.replace(on_nonfinite="skip", loss="mse"))
    with pytest.warns(RuntimeWarning, match=r"skipped an update: non-finite loss"):
        agent.learn()
    assert agent.counters.step == SMALL.total_steps
    assert all_finite(agent)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow in the numpy policy
def test_diverging_weights_are_never_checkpointed(tmp_path: Path) -> None:
    """With a huge step size the first update (finite loss) sends the weights to inf; the
    checkpoint due at that step is refused, so the newest one on disk is still finite."""
    config = SMALL.replace(
        learning_rate=1e300, max_grad_norm=None, checkpoint_interval=4, checkpoint_max_overhead=None
    )
    agent = DQN("CartPole-v1", config, run_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"training diverged at step \d+: q_net\."):
        agent.learn()
    latest = checkpoint.latest_checkpoint(tmp_path)
    assert latest is not None
    assert all_finite(DQN.load(latest))


# ---------------------------------------------------------------------- run directory


@pytest.mark.parametrize("below", [("a-file", "run"), ("a-file",)])
def test_unwritable_run_dir_fails_before_training(tmp_path: Path, below: tuple[str, ...]) -> None:
    """A run dir under a regular file (or a file itself) cannot be created or written, even as
    root; the error comes before the first env step."""
    (tmp_path / "a-file").write_text("not a directory")
    run = tmp_path.joinpath(*below)
    agent = DQN("CartPole-v1", SMALL, run_dir=run)
    with pytest.raises(ConfigError, match=r"run directory .* is not writable \(.+\); choose"):
        agent.learn()
    assert agent.counters.step == 0
    assert len(agent.agent.replay) == 0


# ---------------------------------------------------------------------- replay memory


def test_estimate_matches_the_allocation() -> None:
    buffer = uniform.ReplayBuffer(1_000, (4,), np.float32, 2, 0.99)
    assert uniform.estimate_bytes(1_000, (4,), np.float32, 2) == buffer.nbytes


def test_buffer_larger_than_memory_is_refused_before_allocation() -> None:
    with pytest.raises(TrainingError) as info:
        DQN("CartPole-v1", SMALL.replace(buffer_size=10**12))
    message = str(info.value)
    match = re.fullmatch(
        r"replay buffer needs ([\d.]+) GiB but only ([\d.]+) GiB of memory is available; "
        r"lower buffer_size",
        message,
    )
    assert match, message
    needed = float(match.group(1))
    assert needed == pytest.approx(uniform.estimate_bytes(10**12, (4,), np.float32, 2) / 2**30)
    assert float(match.group(2)) < needed


def test_buffer_check_uses_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uniform, "available_memory_bytes", lambda: 2**30)  # 1 GiB free
    fits = 2**30 // uniform.estimate_bytes(1, (4,), np.float32, 2)
    DQN("CartPole-v1", SMALL.replace(buffer_size=fits))
    with pytest.raises(TrainingError, match=r"needs 1\.00 GiB but only 1\.00 GiB"):
        DQN("CartPole-v1", SMALL.replace(buffer_size=fits + 10))
