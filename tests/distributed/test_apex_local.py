"""Ape-X inside one process (no Ray): the same classes and loop as a Ray run; the run folder,
resume, and a failing learner."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.distributed import ApeX, DistributedConfig, is_distributed_run
from qlearn.distributed import driver as driver_module
from qlearn.distributed.backend import ActorFailure, LocalBackend
from qlearn.distributed.driver import updates_due
from qlearn.errors import TrainingError
from qlearn.train import DQN, TrainingInterrupted

ENV = "CartPole-v1"
CFG = DQNConfig(
    total_steps=1_200,
    hidden_sizes=(32,),
    buffer_size=5_000,
    batch_size=32,
    learning_starts=300,
    train_interval=4,
    target_update_interval=100,
    prioritized=True,
    n_step=3,
    eval_interval=400,
    eval_episodes=2,
    checkpoint_interval=400,
    checkpoint_minutes=0.0,
)
DIST = DistributedConfig(num_actors=2, num_shards=2, block_size=16, broadcast_interval=10)


def test_in_process_run_writes_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    apex = ApeX(ENV, CFG, DIST, run_dir=run, backend="local")
    agent = apex.learn()
    # Blocks of >= 16 transitions arrive whole, so the run may pass its target by one block.
    assert CFG.total_steps <= agent.counters.step < CFG.total_steps + 2 * 16 * 3
    assert agent.learner.num_updates == updates_due(CFG, agent.counters.step)
    assert apex.weights_version >= agent.learner.num_updates // DIST.broadcast_interval
    assert is_distributed_run(run)
    for name in ("config.toml", "run.json", "episodes.csv", "train.csv", "evals.csv"):
        assert (run / name).is_file(), name
    with open(run / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == agent.counters.episodes > 0
    # Warm-up episodes act at random; later ones with one of the two Ape-X rates.
    rates = sorted({round(float(r["epsilon"]), 8) for r in rows})
    assert rates[-1] == 1.0 and set(rates[:-1]) <= {0.4, 0.00065536}
    # eval and play load it as any run: DQN.load reads best/ (else final/).
    loaded = DQN.load(run)
    obs = np.zeros((1, 4), dtype=np.float32)
    if (run / "best").is_dir():
        assert loaded.counters.best_eval == agent.counters.best_eval
    final = DQN.load(run / "final")
    np.testing.assert_allclose(final.learner.q_values(obs), agent.learner.q_values(obs))
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None
    meta = checkpoint.read_meta(latest)
    assert meta["distributed"]["num_shards"] == 2
    _, replay = checkpoint.read_tensors(latest, meta, with_replay=True)
    assert replay is not None and {k.split(".")[0] for k in replay} == {"shard0", "shard1"}


def test_resume_continues_with_the_replay(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ApeX(ENV, CFG, DIST, run_dir=run, backend="local").learn(600)
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None
    step = checkpoint.read_meta(latest)["counters"]["step"]
    resumed = ApeX.resume(run, backend="local")
    assert resumed.counters.step == step
    assert resumed._replay_state is not None
    stored = sum(len(s["replay.actions"]) for s in resumed._replay_state)
    assert stored > 0  # the shards restart with what they held
    agent = resumed.learn()
    assert agent.counters.step >= CFG.total_steps
    assert agent.learner.num_updates == updates_due(CFG, agent.counters.step)


def test_a_failing_learner_stops_the_run_with_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    real = driver_module.train_on_batch
    calls = {"n": 0}

    def dies_later(learner, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 150:  # past the first checkpoint at step 400 (updates from step 300)
            raise RuntimeError("out of memory on the learner")
        return real(learner, batch)

    monkeypatch.setattr(driver_module, "train_on_batch", dies_later)
    with pytest.raises(TrainingError, match=r"the learner failed at step \d+ \(out of memory") as e:
        ApeX(ENV, CFG, DIST, run_dir=run, backend="local").learn()
    assert f"qlearn train --resume {run}" in str(e.value)
    monkeypatch.setattr(driver_module, "train_on_batch", real)
    agent = ApeX.resume(run, backend="local").learn()
    assert agent.counters.step >= CFG.total_steps


def test_cli_resumes_eval_and_plots_a_distributed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qlearn.cli import main as cli_main

    def main(args: list[str]) -> None:
        with pytest.raises(SystemExit) as exit_:
            cli_main(args)
        assert exit_.value.code in (0, None)

    run = tmp_path / "run"
    agent = ApeX(ENV, CFG.replace(total_steps=500), DIST, run_dir=run, backend="local").learn()
    capsys.readouterr()
    # A finished run: --resume sees distributed.toml, takes the Ape-X path and, with nothing
    # left to train, starts no Ray cluster; it reports on the run's models.
    main(["train", "--resume", str(run), "--no-progress"])
    out, err = capsys.readouterr()
    assert f"resuming {run} at step {agent.counters.step}" in err
    assert f"trained {agent.counters.step} steps" in out
    main(["eval", str(run), "--episodes", "2"])
    assert "CartPole-v1: mean return" in capsys.readouterr().out
    main(["plot", str(run)])
    assert (run / "learning_curve.png").stat().st_size > 0


class _OneActorDies(LocalBackend):
    """In-process backend where actor 0's first collect after the warm-up fails as a killed
    process's would, and a new process (another pid) answers for it afterwards."""

    def __init__(self) -> None:
        self.failed = False
        self.weights_after_failure: list[int] = []

    def call(self, handle: Any, method: str, *args: Any, num_returns: int = 1) -> Any:
        if self.failed and getattr(handle, "index", None) == 0 and method == "set_weights":
            self.weights_after_failure.append(args[1])
        out = super().call(handle, method, *args, num_returns=num_returns)
        if method != "collect" or handle.index != 0:
            return out
        block, report = out
        if not self.failed and handle.weights_version >= 0:
            self.failed = True
            return block, _Failed()
        if self.failed:
            report.value.pid += 1  # the restarted process
        return block, report

    def get(self, ref: Any) -> Any:
        if isinstance(ref, _Failed):
            raise ActorFailure("The actor died unexpectedly before finishing this task.")
        return super().get(ref)


class _Failed:
    """The reference of a call whose actor died."""


def test_a_dead_actor_gets_the_weights_and_work_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _OneActorDies()
    monkeypatch.setattr(ApeX, "_make_backend", lambda self: backend)
    monkeypatch.setattr(driver_module, "RETRY_SECONDS", 0.0)  # no wait for a restart here
    apex = ApeX(ENV, CFG.replace(checkpoint_interval=0), DIST, backend="local")
    agent = apex.learn()
    assert backend.failed
    assert agent.counters.step >= CFG.total_steps  # training went on
    assert apex.actor_restarts == 1  # one new process answered for actor 0
    # Back from the dead, actor 0 got the latest weights before any broadcast could reach it.
    assert backend.weights_after_failure and backend.weights_after_failure[0] >= 0


def test_ctrl_c_leaves_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    real = driver_module.train_on_batch
    calls = {"n": 0}

    def interrupted_later(learner, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 50:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C does, mid-update
        return real(learner, batch)

    monkeypatch.setattr(driver_module, "train_on_batch", interrupted_later)
    cfg = CFG.replace(checkpoint_interval=0)  # the only checkpoint is the interrupt's
    with pytest.raises(TrainingInterrupted, match="SIGINT at step") as e:
        ApeX(ENV, cfg, DIST, run_dir=run, backend="local").learn()
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None and str(latest) in str(e.value)
    monkeypatch.setattr(driver_module, "train_on_batch", real)
    assert ApeX.resume(run, backend="local").learn().counters.step >= CFG.total_steps
