"""When periodic checkpoints are written: by default (every `checkpoint_interval` steps or
`checkpoint_minutes` of wall-clock time), delayed by the overhead cap, and never changing what
is learned. The clock is replaced by a fake one that counts env steps (one step = one second),
so the expected checkpoint steps are computed by hand; the events that check the clock fall
every 1,000 steps (the train.csv rows) and at the last step."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.presets import load_preset, preset_names
from qlearn.train import DQN, loop

ENV = "CartPole-v1"
# No updates (learning starts after the last step) and no evaluation: only the env, the replay
# and the checkpoints run, so each test takes about a second.
NO_LEARNING = dict(hidden_sizes=(16,), buffer_size=20_000, eval_interval=0)


def no_learning(total: int, **changes: object) -> DQNConfig:
    return DQNConfig(total_steps=total, learning_starts=total, **NO_LEARNING).replace(**changes)


class Recorder:
    """Spies on DQN.save_checkpoint: the step of each call; each call can also advance the fake
    clock by `cost` seconds, as if writing it took that long."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cost: float = 0.0) -> None:
        self.steps: list[int] = []
        self.cost = cost
        self.extra = 0.0
        real = DQN.save_checkpoint

        def save_checkpoint(agent: DQN) -> Path:
            self.steps.append(agent.counters.step)
            self.extra += self.cost
            return real(agent)

        monkeypatch.setattr(DQN, "save_checkpoint", save_checkpoint)


def step_clock(monkeypatch: pytest.MonkeyPatch, agent: DQN, recorder: Recorder) -> None:
    """The checkpoint clock reads one second per env step, plus the time saves 'took'."""
    monkeypatch.setattr(loop, "_checkpoint_clock", lambda: agent.counters.step + recorder.extra)


def test_default_config_checkpoints_every_10000_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No checkpoint setting at all: the run still leaves a checkpoint with its replay buffer
    at 10,000 steps (the first is never held back by the overhead cap), and one at the end."""
    recorder = Recorder(monkeypatch)
    agent = DQN(ENV, no_learning(15_000), run_dir=tmp_path)
    agent.learn()
    assert recorder.steps == [10_000, 15_000]
    dirs = checkpoint.checkpoint_dirs(tmp_path)
    assert [p.name for p in dirs] == ["step_0000010000", "step_0000015000"]
    first = DQN.load(dirs[0], with_replay=True)
    assert first.counters.step == len(first.learner.replay) == 10_000


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (5.0, [1_000, 2_000, 3_000, 3_500]),  # 300 s: due at every check
        (25.0, [2_000, 3_500]),  # 1,500 s: at 2,000, then 1,500 s later, at the end
        (0.0, [3_500]),  # off: only the end of the run
    ],
)
def test_wall_clock_trigger_with_a_fake_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minutes: float, expected: list[int]
) -> None:
    """3,500 steps never reach the default checkpoint_interval (10,000): every checkpoint but
    the end one comes from `checkpoint_minutes`, counted from the start or the last one."""
    recorder = Recorder(monkeypatch)
    agent = DQN(ENV, no_learning(3_500, checkpoint_minutes=minutes), run_dir=tmp_path)
    step_clock(monkeypatch, agent, recorder)
    agent.learn()
    assert recorder.steps == expected


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        # A save at 1,000 'takes' 100 s: with a 2% cap the next may start 5,000 s after it
        # began (clock 6,000, step 5,900), so the check at 6,000 writes it; 8,000 is the end.
        (0.02, [1_000, 6_000, 8_000]),
        # 5%: 2,000 s after the last began; the clock runs 100 s ahead per save made.
        (0.05, [1_000, 3_000, 5_000, 7_000, 8_000]),
        (None, [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000]),
    ],
)
def test_overhead_cap_delays_costly_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: float | None, expected: list[int]
) -> None:
    recorder = Recorder(monkeypatch, cost=100.0)
    config = no_learning(
        8_000, checkpoint_interval=1_000, checkpoint_minutes=0.0, checkpoint_max_overhead=cap
    )
    agent = DQN(ENV, config, run_dir=tmp_path)
    step_clock(monkeypatch, agent, recorder)
    agent.learn()
    assert recorder.steps == expected


LEARNING = DQNConfig(
    total_steps=2_000,
    hidden_sizes=(32,),
    buffer_size=5_000,
    batch_size=32,
    learning_starts=200,
    target_update_interval=250,
    exploration_fraction=0.5,
    eval_interval=1_000,
    eval_episodes=2,
    seed=5,
)


@pytest.mark.parametrize(
    "variant",
    [
        {},  # the numpy engine, one plain env
        # the torch engine with torch's RNG (noisy nets), a sum tree, the vector-env driver
        {"noisy": True, "prioritized": True, "n_step": 3, "num_envs": 2},
    ],
    ids=["numpy", "torch-noisy-per-nstep"],
)
def test_checkpoints_do_not_change_what_is_learned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: dict[str, object]
) -> None:
    """A run without periodic checkpoints and one with many, at irregular moments chosen by a
    jittery fake clock, end with the same weights, optimizer state, replay, RNG states and
    episode log."""
    quiet = LEARNING.replace(checkpoint_interval=0, checkpoint_minutes=0.0, **variant)
    agent = DQN(ENV, quiet, run_dir=tmp_path / "quiet")
    agent.learn()
    assert checkpoint.checkpoint_dirs(tmp_path / "quiet") == []

    jitter = random.Random(0)
    now = [0.0]

    def clock() -> float:
        now[0] += jitter.uniform(0.0, 1.0)
        return now[0]

    monkeypatch.setattr(loop, "_checkpoint_clock", clock)
    recorder = Recorder(monkeypatch)
    busy = quiet.replace(
        checkpoint_interval=700, checkpoint_minutes=0.01, checkpoint_max_overhead=None
    )
    other = DQN(ENV, busy, run_dir=tmp_path / "busy")
    other.learn()
    assert len(recorder.steps) >= 4
    assert any(s % 700 for s in recorder.steps[:-1])  # some came from the clock

    a, b = agent.learner.tensors(), other.learner.tensors()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra, rb = agent.learner.replay.state_dict(), other.learner.replay.state_dict()
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)
    assert agent.learner.rng_state() == other.learner.rng_state()
    assert agent.learner.num_updates == other.learner.num_updates
    skip = {"wall_time"}
    ca, cb = dataclasses.asdict(agent.counters), dataclasses.asdict(other.counters)
    assert {k: v for k, v in ca.items() if k not in skip} == {
        k: v for k, v in cb.items() if k not in skip
    }
    episodes = [(p / "episodes.csv").read_text() for p in (tmp_path / "quiet", tmp_path / "busy")]
    assert episodes[0] == episodes[1]


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_checkpoints_by_default_with_bounded_overhead(name: str) -> None:
    """Each preset leaves something to resume after a crash (a step and a time trigger) and caps
    the time spent writing checkpoints, which matters for the big replays (Atari: ~7 GB)."""
    config = load_preset(name)
    assert config.checkpoint_interval > 0
    assert 0 < config.checkpoint_minutes <= 10
    assert config.checkpoint_max_overhead is not None and config.checkpoint_max_overhead <= 0.02
