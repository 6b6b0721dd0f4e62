"""Save, load and continue: a checkpoint holds the whole training state, and a resumed run goes
on exactly as the run that wrote it would have.

What a resume cannot restore, by design (see `DQN.resume`): the environments start from a
reset, seeded with `seed + step`, so the episodes in flight at the checkpoint are lost. A run
stopped and continued in the same process resets the same way, so resuming from disk must match
it bit for bit; against a straight, never-stopped run only what precedes the checkpoint (and the
step-based schedules) can match.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.train import DQN, TrainingInterrupted

ENV = "CartPole-v1"
TOTAL = 2_000
HALF = 1_000
CFG = DQNConfig(
    total_steps=TOTAL,
    hidden_sizes=(32,),
    buffer_size=5_000,
    batch_size=32,
    learning_starts=200,
    target_update_interval=250,
    exploration_fraction=0.5,
    eval_interval=HALF,
    eval_episodes=2,
    checkpoint_interval=500,
    checkpoint_max_overhead=None,  # every due checkpoint written, however slow the machine
    seed=3,
)
TIMING = {"steps_per_s", "eval_time_s", "train_time_s"}  # CSV columns that measure time


@dataclasses.dataclass
class Snapshot:
    """Everything a checkpoint should hold, copied out of a live agent."""

    tensors: dict[str, torch.Tensor]
    replay: dict[str, np.ndarray]
    counters: dict[str, Any]
    agent_counters: dict[str, Any]

    @classmethod
    def of(cls, agent: DQN) -> Snapshot:
        return cls(
            tensors={k: v.detach().clone() for k, v in agent.learner.tensors().items()},
            replay={k: v.copy() for k, v in agent.learner.replay.state_dict().items()},
            counters=dataclasses.asdict(agent.counters),
            agent_counters=copy.deepcopy(
                {"num_updates": agent.learner.num_updates, **agent.learner.rng_state()}
            ),
        )


def assert_same_state(a: Snapshot, b: Snapshot, *, skip: set[str] = frozenset()) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors.keys() - skip:
        assert a.tensors[key].dtype == b.tensors[key].dtype, key
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert a.replay.keys() == b.replay.keys()
    for key in a.replay:
        np.testing.assert_array_equal(a.replay[key], b.replay[key], err_msg=key)
    assert {k: v for k, v in a.counters.items() if k not in skip} == {
        k: v for k, v in b.counters.items() if k not in skip
    }
    assert a.agent_counters == b.agent_counters


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_logs_continuous(run: Path, total: int, eval_interval: int) -> None:
    """No duplicated and no missing rows in the three CSV logs of a finished run."""
    episodes = read_csv(run / "episodes.csv")
    steps = [int(r["step"]) for r in episodes]
    assert steps == sorted(set(steps)), "episode rows out of order or duplicated"
    assert [int(r["episode"]) for r in episodes] == list(range(1, len(episodes) + 1))
    assert all(0 < s <= total for s in steps)
    train_steps = [int(r["step"]) for r in read_csv(run / "train.csv")]
    assert train_steps == list(range(1_000, total + 1, 1_000))
    eval_steps = [int(r["step"]) for r in read_csv(run / "evals.csv")]
    assert eval_steps == list(range(eval_interval, total + 1, eval_interval))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A straight run, and a run stopped at HALF then continued in-process and from disk."""
    root = tmp_path_factory.mktemp("resume")
    out: dict[str, Any] = {}

    straight = DQN(ENV, CFG, run_dir=root / "straight")

    def snapshot(agent: DQN, metrics: dict[str, float]) -> None:
        if metrics["step"] == HALF:
            out["straight_half"] = Snapshot.of(agent)

    straight.learn(callback=snapshot)
    out["straight"] = straight

    stopped = DQN(ENV, CFG, run_dir=root / "in_process")
    stopped.learn(callback=lambda agent, metrics: metrics["step"] < HALF)
    assert stopped.counters.step == HALF
    # Kept aside: later periodic checkpoints prune the run's own copy.
    out["checkpoint"] = shutil.copytree(stopped.save_checkpoint(), root / "half_checkpoint")
    out["stopped_half"] = Snapshot.of(stopped)
    shutil.copytree(root / "in_process", root / "resumed")

    stopped.learn()  # continue in the same process
    out["in_process"] = stopped
    resumed = DQN.resume(root / "resumed")
    out["resumed_at_start"] = Snapshot.of(resumed)
    resumed.learn()
    out["resumed"] = resumed
    out["root"] = root
    return out


def test_loaded_state_equals_saved_state(runs: dict[str, Any]) -> None:
    """Every tensor (both networks, Adam moments and step, torch RNG), the counters, the numpy
    RNG state and the replay arrays come back exactly as saved."""
    loaded = DQN.load(runs["checkpoint"], with_replay=True)
    assert_same_state(Snapshot.of(loaded), runs["stopped_half"])
    tensors = loaded.learner.tensors()
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in tensors)
    replay, saved = loaded.learner.replay, runs["stopped_half"].replay
    assert (replay.storage.pos, replay.storage.size) == tuple(saved["replay.pos"]) == (HALF, HALF)
    # The restored numpy generator continues the saved stream.
    expected = np.random.default_rng()
    expected.bit_generator.state = runs["stopped_half"].agent_counters["numpy_rng"]
    assert loaded.learner.rng.random(5).tolist() == expected.random(5).tolist()


def test_load_without_replay_keeps_weights_and_counters(runs: dict[str, Any]) -> None:
    loaded = DQN.load(runs["checkpoint"])
    assert len(loaded.learner.replay) == 0
    saved = runs["stopped_half"]
    for key, value in saved.tensors.items():
        assert torch.equal(loaded.learner.tensors()[key], value), key
    assert dataclasses.asdict(loaded.counters) == saved.counters


def test_checkpoint_holds_what_a_straight_run_has_at_that_step(runs: dict[str, Any]) -> None:
    """Stopping at HALF changes nothing before it: the checkpoint equals the straight run's
    state at HALF (weights, target net, Adam, replay, RNGs, counters; not wall time)."""
    assert_same_state(runs["stopped_half"], runs["straight_half"], skip={"wall_time"})


def test_resume_from_disk_equals_continuing_in_process(runs: dict[str, Any]) -> None:
    """Resuming restores all that training depends on: the continued runs match bit for bit,
    so step/episode counters, epsilon and target-update phase, Adam moments, replay and RNG
    streams were all restored."""
    a, b = Snapshot.of(runs["in_process"]), Snapshot.of(runs["resumed"])
    # torch's RNG is process-global (both agents share it here) and unused without noisy nets.
    assert_same_state(a, b, skip={"wall_time", "torch_rng"})
    assert runs["resumed"].counters.step == TOTAL
    root = runs["root"]
    for name in ("episodes.csv", "train.csv", "evals.csv"):
        assert without_timing(read_csv(root / "resumed" / name)) == without_timing(
            read_csv(root / "in_process" / name)
        ), name


def test_resumed_starts_where_the_checkpoint_was(runs: dict[str, Any]) -> None:
    assert_same_state(runs["resumed_at_start"], runs["stopped_half"])


def test_straight_vs_resumed_run(runs: dict[str, Any]) -> None:
    """Comparable: counters of steps and evaluations, the replay up to the resume point.
    Different: the env was reset at the resume point, so transitions after it (and the
    episode count, and the weights learned from them) differ from the straight run's."""
    straight, resumed = runs["straight"], runs["resumed"]
    assert straight.counters.step == resumed.counters.step == TOTAL
    assert straight.counters.target_step == resumed.counters.target_step == TOTAL
    assert straight.counters.num_evals == resumed.counters.num_evals == TOTAL // HALF
    assert straight.learner.num_updates == resumed.learner.num_updates
    s, r = straight.learner.replay.storage, resumed.learner.replay.storage
    assert len(s) == len(r) == TOTAL
    for name in ("obs", "next_obs", "actions", "returns", "terminated"):
        np.testing.assert_array_equal(getattr(s, name)[:HALF], getattr(r, name)[:HALF])
    reset_obs, _ = gym.make(ENV).reset(seed=CFG.seed + HALF)
    np.testing.assert_array_equal(r.obs[HALF], reset_obs)  # the documented env reset
    assert not np.array_equal(s.obs[HALF:], r.obs[HALF:])


def test_logs_of_resumed_run_are_continuous(runs: dict[str, Any]) -> None:
    assert_logs_continuous(runs["root"] / "resumed", TOTAL, HALF)
    assert_logs_continuous(runs["root"] / "straight", TOTAL, HALF)


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    """SIGTERM (here sent by the process to itself during the first evaluation) stops at the
    next step boundary with a checkpoint; the resumed run finishes with continuous logs."""
    run = tmp_path / "run"
    agent = DQN(ENV, CFG, run_dir=run)

    def terminate(agent: DQN, metrics: dict[str, float]) -> None:
        if metrics["step"] == HALF:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=rf"SIGTERM at step {HALF}; checkpoint saved"):
        agent.learn(callback=terminate)
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None and latest.name == f"step_{HALF:010d}"
    assert not (run / "final").exists()

    resumed = DQN.resume(run)
    assert resumed.counters.step == HALF
    resumed.learn()
    assert resumed.counters.step == TOTAL
    assert (run / "final").is_dir()
    # Periodic checkpoints every checkpoint_interval steps; the newest two are kept.
    assert [p.name for p in checkpoint.checkpoint_dirs(run)] == [
        f"step_{TOTAL - CFG.checkpoint_interval:010d}",
        f"step_{TOTAL:010d}",
    ]
    assert_logs_continuous(run, TOTAL, HALF)


def test_resume_continues_to_the_target_of_the_interrupted_call(tmp_path: Path) -> None:
    """learn(n) trains n more steps; a run interrupted in such a call resumes to its end
    (start + n), and only a later learn() goes on to the planned total."""
    run = tmp_path / "run"
    cfg = CFG.replace(eval_interval=250, checkpoint_interval=250)
    agent = DQN(ENV, cfg, run_dir=run)
    agent.learn(500)
    assert agent.counters.step == 500

    def terminate(agent: DQN, metrics: dict[str, float]) -> None:
        if metrics["step"] == 750:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 750"):
        agent.learn(500, callback=terminate)
    resumed = DQN.resume(run)
    assert (resumed.counters.step, resumed.counters.target_step) == (750, 1_000)
    resumed.learn()
    assert resumed.counters.step == 1_000
    resumed.learn()
    assert resumed.counters.step == TOTAL


def test_old_checkpoints_name_the_target_total_steps(tmp_path: Path) -> None:
    """Checkpoints written before `target_step` hold it as counters.total_steps."""
    path = DQN(ENV, CFG.replace(total_steps=300, eval_interval=0)).learn().save(tmp_path / "m")
    meta = json.loads((path / checkpoint.META).read_text())
    meta["counters"]["total_steps"] = meta["counters"].pop("target_step")
    (path / checkpoint.META).write_text(json.dumps(meta))
    assert DQN.load(path).counters.target_step == 300


def test_resume_says_why_there_is_no_checkpoint(tmp_path: Path) -> None:
    from qlearn.errors import CheckpointError

    def refused(run: Path) -> str:
        with pytest.raises(
            CheckpointError, match="has no complete checkpoint to resume from: "
        ) as e:
            DQN.resume(run)
        return str(e.value).split(": ", 1)[1]

    assert refused(tmp_path / "nowhere") == "no such directory"
    assert refused(tmp_path) == (
        "it holds no readable config.toml, so it is not a qlearn run directory"
    )

    early = tmp_path / "early"  # default checkpoint settings; stopped at the first evaluation
    config = CFG.replace(checkpoint_interval=10_000, checkpoint_max_overhead=0.02)
    DQN(ENV, config, run_dir=early).learn(callback=lambda agent, metrics: False)
    assert refused(early) == (
        "it stopped before its first periodic checkpoint (due after 10000 steps or 5 minutes of "
        "training); train it again without --resume"
    )

    off = tmp_path / "off"
    config = CFG.replace(total_steps=600, checkpoint_interval=0, checkpoint_minutes=0.0)
    DQN(ENV, config, run_dir=off).learn()
    assert refused(off) == (
        "its config disables periodic checkpoints (checkpoint_interval = 0 and "
        "checkpoint_minutes = 0); train it again without --resume"
    )

    broken = tmp_path / "broken"
    DQN(ENV, CFG.replace(total_steps=1_000, eval_interval=0), run_dir=broken).learn()
    for path in checkpoint.checkpoint_dirs(broken):
        with open(path / checkpoint.MODEL, "ab") as f:
            f.write(b"x")
    assert refused(broken) == "its 2 checkpoint(s) fail the size and SHA-256 checks"


def test_resume_reads_a_best_model_that_a_crash_left_moved_aside(tmp_path: Path) -> None:
    """A kill between the two renames that replace best/ leaves only its hidden old copy; resume
    puts it back before reading its score, so a worse model cannot replace it."""
    run = tmp_path / "run"
    agent = DQN(ENV, CFG.replace(total_steps=600, eval_interval=0), run_dir=run)
    agent.learn()
    agent.counters.best_eval = 1e9
    agent.save(run / "best")
    os.rename(run / "best", run / ".best.old")
    assert DQN.resume(run).counters.best_eval == 1e9
    assert DQN.load(run / "best").counters.best_eval == 1e9


def test_fresh_run_refuses_a_dir_holding_another_run(runs: dict[str, Any]) -> None:
    """Starting over in a run dir with checkpoints would mix two runs (pruning would delete
    the new run's checkpoints, --resume would pick the old run's)."""
    from qlearn.errors import ConfigError

    run = runs["root"] / "resumed"
    with pytest.raises(ConfigError, match="already holds checkpoints of another run"):
        DQN(ENV, CFG, run_dir=run).learn()


def test_resume_keeps_a_newer_best_model(tmp_path: Path) -> None:
    """The best model on disk can be newer than the checkpoint; a resumed run must not replace
    it with a model that scores less."""
    run = tmp_path / "run"
    agent = DQN(ENV, CFG.replace(total_steps=600, eval_interval=0), run_dir=run)
    agent.learn()
    agent.counters.best_eval = 1e9  # as if a later, lost evaluation had scored this
    agent.save(run / "best")
    assert DQN.resume(run).counters.best_eval == 1e9
