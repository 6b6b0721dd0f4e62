"""Training refuses bad input with clear errors: NaN/inf from the env, a diverging loss or
weights, an unwritable run dir, a replay buffer, network or batch larger than memory, a
checkpoint asking for a network it does not hold, more envs than steps, a negative seed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.errors import CheckpointError, ConfigError, TrainingError
from qlearn.replay import make_memory, storage
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
        for v in agent.learner.tensors().values()
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
    assert len(agent.learner.replay) == 36


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
    assert np.isfinite(latest.learner.replay.storage.returns).all()
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
    assert len(agent.learner.replay) == 0


# ---------------------------------------------------------------------- replay memory


def test_estimate_matches_the_allocation() -> None:
    buffer = make_memory(1_000, (4,), np.float32, 2, 0.99)
    assert storage.estimate_bytes(1_000, (4,), np.float32, 2) == buffer.nbytes


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
    assert needed == pytest.approx(storage.estimate_bytes(10**12, (4,), np.float32, 2) / 2**30)
    assert float(match.group(2)) < needed


def test_buffer_check_uses_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "available_memory_bytes", lambda: 2**30)  # 1 GiB free
    fits = 2**30 // storage.estimate_bytes(1, (4,), np.float32, 2)
    DQN("CartPole-v1", SMALL.replace(buffer_size=fits))
    with pytest.raises(TrainingError, match=r"needs 1\.00 GiB but only 1\.00 GiB"):
        DQN("CartPole-v1", SMALL.replace(buffer_size=fits + 10))


# ---------------------------------------------------------------------- network and batch memory


def test_network_larger_than_memory_is_refused_before_allocation() -> None:
    """hidden_sizes = [10**9] used to die in torch's allocator (here 10**12, which no machine
    holds). CartPole's 4 inputs, one hidden layer of 1e12 and 2 outputs: 4e12 + 1e12 + 2e12 + 2
    parameters, each held 6 times (online, target, gradient, two Adam moments, the numpy
    engine's scratch) as float32."""
    with pytest.raises(TrainingError) as info:
        DQN("CartPole-v1", SMALL.replace(hidden_sizes=(10**12,)))
    match = re.fullmatch(
        r"a network of 7,000,000,000,002 parameters \(online and target copies, gradient, Adam "
        r"moments\) needs ([\d.]+) GiB but only ([\d.]+) GiB of memory is available; "
        r"lower hidden_sizes",
        str(info.value),
    )
    assert match, str(info.value)
    assert float(match.group(1)) == pytest.approx(7_000_000_000_002 * 6 * 4 / 2**30, abs=0.005)


def test_network_check_uses_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # hidden (16,): 4*16 + 16 + 16*2 + 2 = 114 parameters, 114 * 6 * 4 = 2,736 bytes.
    monkeypatch.setattr(storage, "available_memory_bytes", lambda: 2_736)
    DQN("CartPole-v1", SMALL, lazy_replay=True)
    monkeypatch.setattr(storage, "available_memory_bytes", lambda: 2_735)
    with pytest.raises(TrainingError, match=r"a network of 114 parameters .* lower hidden_sizes"):
        DQN("CartPole-v1", SMALL, lazy_replay=True)


def test_update_larger_than_memory_is_refused_before_allocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of 10**7 CartPole transitions: the estimate, worked by hand, is checked before the
    replay buffer (or anything else sized by the batch) is allocated."""
    monkeypatch.setattr(storage, "available_memory_bytes", lambda: 2**30)  # 1 GiB free
    config = SMALL.replace(batch_size=10**7, buffer_size=10**7)
    # A row: obs and next_obs stored (2 * 16 bytes) and as float32 input (2 * 16), plus 32 for
    # action, reward, termination, discount, weight and index. Activations per row: 4 inputs +
    # 16 hidden + 2 outputs = 22 floats, 4 copies per batch row plus the target pass's rows
    # (at most 16,384 at a time).
    rows_bytes = 10**7 * (2 * 16 + 2 * 16 + 32)
    activation_bytes = 4 * (4 * 10**7 + 16_384) * 22
    needed = (rows_bytes + activation_bytes) / 2**30
    with pytest.raises(TrainingError) as info:
        DQN("CartPole-v1", config)
    assert str(info.value) == (
        f"one update (batch_size = 10000000: sampled transitions and activations) needs "
        f"{needed:.2f} GiB but only 1.00 GiB of memory is available; lower batch_size or "
        "hidden_sizes"
    )
    # An agent that only acts never samples a batch: it is not refused for one.
    agent = DQN("CartPole-v1", config, lazy_replay=True)
    assert agent.learner._replay is None
    with pytest.raises(TrainingError, match=r"one update \(batch_size = 10000000"):
        agent.learn()


def test_batch_larger_than_the_buffer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch_size = 2001 is larger than buffer_size = 2000"):
        DQN("CartPole-v1", SMALL.replace(batch_size=2_001))


# ---------------------------------------------------------------------- checkpoints asking too much


def _edit_config(ckpt: Path, **changes: Any) -> None:
    meta = json.loads((ckpt / checkpoint.META).read_text())
    meta["config"].update(changes)
    (ckpt / checkpoint.META).write_text(json.dumps(meta))


@pytest.fixture
def small_checkpoint(tmp_path: Path) -> Path:
    agent = DQN("CartPole-v1", SMALL.replace(total_steps=200, learning_starts=50))
    agent.learn()
    return agent.save(tmp_path / "model", include_replay=True)


def test_checkpoint_asking_for_a_huge_network_is_refused_from_the_header(
    small_checkpoint: Path,
) -> None:
    """meta.json asking for hidden_sizes [1e6, 1e6] (a trillion parameters) used to make load
    build that network and die in the allocator; the tensor shapes in the safetensors header
    (16 hidden units) tell the truth first."""
    _edit_config(small_checkpoint, hidden_sizes=[1_000_000, 1_000_000])
    for with_replay in (False, True):
        with pytest.raises(CheckpointError) as info:
            DQN.load(small_checkpoint, with_replay=with_replay)
        assert str(info.value) == (
            f"checkpoint {str(small_checkpoint)!r} does not fit the network its config "
            "describes (hidden_sizes [1000000, 1000000], observations Box(4,) float32, actions "
            "Discrete(2)): q_net.body.0.weight has shape (16, 4) where the network needs "
            "(1000000, 4); q_net.body.0.bias has shape (16,) where the network needs (1000000,) "
            "(and 16 more)"
        )


def test_checkpoint_with_a_wrong_moment_shape_is_refused(small_checkpoint: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = small_checkpoint / checkpoint.MODEL
    tensors = load_file(str(model))
    tensors["optim.0.exp_avg"] = torch.zeros(3, 3)
    save_file(tensors, str(model))
    meta = json.loads((small_checkpoint / checkpoint.META).read_text())
    data = model.read_bytes()
    meta["files"][checkpoint.MODEL] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (small_checkpoint / checkpoint.META).write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"optim\.0\.exp_avg has shape \(3, 3\) where the network needs "
    ):
        DQN.load(small_checkpoint)


def test_checkpoint_whose_network_does_not_fit_in_memory(
    small_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shapes match; this machine (1 KiB free, as patched) cannot hold 114 * 24 bytes.
    monkeypatch.setattr(storage, "available_memory_bytes", lambda: 1_024)
    with pytest.raises(CheckpointError) as info:
        DQN.load(small_checkpoint)
    assert str(info.value).startswith(
        f"checkpoint {str(small_checkpoint)!r} cannot be loaded here: a network of 114 "
        "parameters (online and target copies, gradient, Adam moments) needs 0.00 GiB but only "
        "0.00 GiB of memory is available; it needs a machine with more memory"
    )


# ---------------------------------------------------------------------- envs and seeds


def test_more_envs_than_steps_is_refused_by_learn() -> None:
    """learn(n) with n below num_envs would overrun the budget by a whole round."""
    agent = DQN("CartPole-v1", SMALL.replace(num_envs=4))
    with pytest.raises(ConfigError, match=r"num_envs = 4 is out of range; allowed: \[1, 3\]"):
        agent.learn(3)
    assert agent.counters.step == 0


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_evaluation_seed_is_checked(seed: Any) -> None:
    agent = DQN("CartPole-v1", SMALL, lazy_replay=True)
    with pytest.raises(ConfigError, match=r"seed = .* is (out of range|invalid); allowed: "):
        agent.evaluate(2, seed=seed)
