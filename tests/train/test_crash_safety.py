"""Crash safety of `qlearn train`: SIGTERM/SIGINT save a checkpoint and exit with one error
line; SIGKILL at random moments never leaves a broken checkpoint or log, and `--resume` always
gets the run to its last step.

The SIGTERM/SIGINT test runs the real `qlearn` command in subprocesses. The SIGKILL test forks
its training processes from a forkserver that has already imported qlearn, so eleven cycles cost
seconds instead of eleven interpreter start-ups; each child is still a separate process running
the CLI entry point, killed with SIGKILL. A last test kills a run that uses the default
checkpoint settings, which must leave something to resume.
"""

from __future__ import annotations

import csv
import itertools
import math
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from qlearn import checkpoint
from qlearn.cli import main
from qlearn.monitor import read_log
from qlearn.train import DQN

# The killed processes are given far more steps than they can reach before their kill: how far
# a cycle gets depends on the machine's speed and load, and a kill must never find training
# finished. The last, unkilled run is then given a total a little past the newest checkpoint.
KILLED_TOTAL = 1_000_000
CHECKPOINT_INTERVAL = 250
EVAL_INTERVAL = 3_000
NUM_KILLS = 11
# Checkpoints far more often than the defaults, every one written (no overhead cap), so that
# kills often land while one is being written or pruned.
CHECKPOINT_SETTINGS = [f"checkpoint_interval={CHECKPOINT_INTERVAL}", "checkpoint_max_overhead=none"]
SHORT_RUN = [
    f"eval_interval={EVAL_INTERVAL}",
    "eval_episodes=2",
    "hidden_sizes=[32]",
    "learning_starts=500",
    "train_interval=16",  # few updates: the test is about files, not learning
    "buffer_size=10000",
    "batch_size=32",
]
SETTINGS = CHECKPOINT_SETTINGS + SHORT_RUN
CSV_LOGS = ("episodes.csv", "train.csv", "evals.csv")


def qlearn_command() -> list[str]:
    script = Path(sys.executable).with_name("qlearn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from qlearn.cli import main; main()"]


def train_args(run: Path, steps: int, settings: list[str] = SETTINGS) -> list[str]:
    args = ["train", "CartPole-v1", "--run-dir", str(run), "--steps", str(steps), "--no-progress"]
    for setting in settings:
        args += ["--set", setting]
    return args


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def check_run_files(run: Path) -> None:
    """Every checkpoint present passes the size and SHA-256 checks and loads; every CSV log
    reads as resume reads it (`read_log`: it may be absent, empty, or hold part of its header, or
    a cut-off last row), and every line before that is a complete row of numbers."""
    dirs = checkpoint.checkpoint_dirs(run)
    for path in dirs:
        DQN.load(path, with_replay=True)
    for name in ("best", "final"):
        if (run / name).exists():
            DQN.load(run / name)
    for name in CSV_LOGS:
        header, rows = read_log(run / name)
        if header is None:
            continue
        assert header[0] == "step", name
        complete_lines = (run / name).read_text(encoding="utf-8").count("\n")
        assert len(rows) == complete_lines - 1, f"{name}: a row before the last is incomplete"
        for row in rows:
            for value in row:
                float(value)  # raises on a half-written number


def read_steps(path: Path) -> list[int]:
    with open(path, newline="", encoding="utf-8") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


# ---------------------------------------------------------------------- SIGTERM and SIGINT


def test_sigterm_and_sigint_save_a_checkpoint_and_exit_with_one_error_line(
    tmp_path: Path,
) -> None:
    signals = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
    procs = {}
    for name in signals:  # both at once: the interpreter start-ups overlap
        run = tmp_path / name
        procs[name] = (
            run,
            subprocess.Popen(
                qlearn_command() + train_args(run, 1_000_000),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    for name, (run, proc) in procs.items():
        wait_for(
            lambda run=run, proc=proc: checkpoint.checkpoint_dirs(run) or proc.poll() is not None,
            timeout=180,
            what=f"the first checkpoint of {run}",
        )
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signals[name])
    for name, (run, proc) in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        match = re.fullmatch(rf"error: {name} at step (\d+); checkpoint saved to (\S+)", lines[0])
        assert match, lines[0]
        step, saved = int(match.group(1)), Path(match.group(2))
        if not saved.is_absolute():
            saved = tmp_path / saved
        assert saved.name == f"step_{step:010d}"
        assert checkpoint.latest_checkpoint(run) == saved
        agent = DQN.load(saved, with_replay=True)
        assert agent.counters.step == step
        assert len(agent.learner.replay) == min(step, 10_000)  # buffer_size
        check_run_files(run)


# ---------------------------------------------------------------------- SIGKILL


def newest_step(run: Path) -> int:
    """The step of the newest periodic checkpoint directory (by name; no checks)."""
    dirs = checkpoint.checkpoint_dirs(run)
    return int(dirs[-1].name[len(checkpoint.CHECKPOINT_PREFIX) :]) if dirs else 0


def forkserver() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo is imported lazily by the first optimizer state_dict: seconds per child.
    ctx.set_forkserver_preload(["qlearn.cli", "qlearn.train", "torch._dynamo"])
    return ctx


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Eleven training processes killed with SIGKILL at seeded random moments, each resumed
    from the newest complete checkpoint; then one more that runs to the end.

    Each process is killed at a random point of a checkpoint period (measured on this machine
    as the time between its first two new checkpoints), so some kills land while a checkpoint
    is being written or pruned, and each cycle makes progress on fast and slow machines alike.
    """
    ctx = forkserver()
    rng = random.Random(20_240_605)
    run = tmp_path / "run"
    kills = 0
    start_steps = []

    def start() -> multiprocessing.process.BaseProcess:
        latest = checkpoint.latest_checkpoint(run)
        start_steps.append(
            0 if latest is None else checkpoint.read_meta(latest)["counters"]["step"]
        )
        if latest is None:
            argv = train_args(run, KILLED_TOTAL)
        else:
            argv = ["train", "--resume", str(run), "--no-progress"]
        proc = ctx.Process(target=main, args=(argv,), daemon=True)
        proc.start()
        return proc

    while kills < NUM_KILLS:
        proc = start()
        marks = []
        for _ in range(2):  # two new checkpoints: training runs, and one period is timed
            step = newest_step(run) if marks else start_steps[-1]
            wait_for(
                lambda step=step, proc=proc: newest_step(run) > step or not proc.is_alive(),
                timeout=120,
                what="a new checkpoint",
            )
            marks.append(time.monotonic())
        time.sleep(rng.uniform(0.0, marks[1] - marks[0]))
        assert proc.is_alive(), f"training process ended before kill {kills + 1}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        if os.environ.get("QLEARN_CRASH_DEBUG"):
            left = [p.name for p in run.rglob(".*")]
            print(f"kill {kills}: newest checkpoint {newest_step(run)}, temporaries {left}")
        check_run_files(run)

    # The last run goes to the end: to a multiple of every interval a little past its start.
    agent = DQN.resume(run)
    start_steps.append(agent.counters.step)
    total = (agent.counters.step // EVAL_INTERVAL + 2) * EVAL_INTERVAL
    agent.learn(total - agent.counters.step)  # learn(n) trains n more steps
    check_run_files(run)

    # Training reached its last step, and each resume started from a newer checkpoint.
    assert checkpoint.read_meta(run / "final")["counters"]["step"] == total
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None and latest.name == f"step_{total:010d}"
    assert all(a < b for a, b in itertools.pairwise(start_steps))
    assert not [p.name for p in run.rglob(".*") if p.name != ".write-test"]  # no temporaries

    # The logs continue across eleven kills with no duplicated and no missing rows.
    assert read_steps(run / "train.csv") == list(range(1_000, total + 1, 1_000))
    assert read_steps(run / "evals.csv") == list(range(EVAL_INTERVAL, total + 1, EVAL_INTERVAL))
    with open(run / "episodes.csv", newline="", encoding="utf-8") as f:
        episodes = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in episodes]
    assert steps == sorted(set(steps)) and steps[0] > 0 and steps[-1] <= total
    assert [int(r["episode"]) for r in episodes] == list(range(1, len(episodes) + 1))
    final = checkpoint.read_meta(run / "final")["counters"]
    assert final["episodes"] == len(episodes)
    assert all(math.isfinite(float(r["return"])) for r in episodes)


def test_sigkill_with_default_checkpoint_settings_then_resume(tmp_path: Path) -> None:
    """With no checkpoint setting at all, a run killed after 10,000 steps (the default
    checkpoint_interval) resumes from there and finishes with continuous logs."""
    total = 20_000
    run = tmp_path / "run"
    ctx = forkserver()
    proc = ctx.Process(target=main, args=(train_args(run, total, SHORT_RUN),), daemon=True)
    proc.start()
    wait_for(lambda: newest_step(run) > 0 or not proc.is_alive(), timeout=120, what="a checkpoint")
    assert proc.is_alive(), "training ended without a periodic checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    check_run_files(run)
    latest = checkpoint.latest_checkpoint(run)
    assert latest is not None and latest.name == "step_0000010000"
    assert not (run / "final").exists()

    proc = ctx.Process(target=main, args=(["train", "--resume", str(run), "--no-progress"],))
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0
    check_run_files(run)
    assert checkpoint.read_meta(run / "final")["counters"]["step"] == total
    assert [p.name for p in checkpoint.checkpoint_dirs(run)] == [
        "step_0000010000",
        f"step_{total:010d}",
    ]
    assert read_steps(run / "train.csv") == list(range(1_000, total + 1, 1_000))
    episodes = read_steps(run / "episodes.csv")
    assert episodes == sorted(set(episodes)) and episodes[-1] <= total
