"""Crash and resume: train a preset with `qlearn train`, SIGKILL it at random moments, resume
each time with `qlearn train --resume`, then check the result still solves the task.

After every kill, each checkpoint left on disk must pass its size and SHA-256 checks and load,
and the CSV logs must parse; at the end the run must have reached its last step, and
`qlearn eval RUN` (the best model, 20 greedy episodes) must reach the preset's target. The CI
version of this check is tests/train/test_crash_safety.py (a short run, no learning target).

    .venv/bin/python benchmarks/crash_resume.py                # cartpole, 10 kills
    .venv/bin/python benchmarks/crash_resume.py --kills 20 --seed 1
    .venv/bin/python benchmarks/crash_resume.py --set learning_rate=2.3e-3 --set ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qlearn import checkpoint
from qlearn.cli.dqn import build_config
from qlearn.train import DQN

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"cartpole": ("CartPole-v1", 475.0)}


def qlearn_command() -> list[str]:
    script = Path(sys.executable).with_name("qlearn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from qlearn.cli import main; main()"]


def check_run(run: Path) -> int:
    """Load every checkpoint on disk and parse every CSV log; the newest checkpoint's step."""
    for path in checkpoint.checkpoint_dirs(run):
        DQN.load(path, with_replay=True)
    for name in ("best", "final"):
        if (run / name).exists():
            DQN.load(run / name)
    for name in ("episodes.csv", "train.csv", "evals.csv"):
        if (run / name).exists():
            with open(run / name, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            assert all(len(r) == len(rows[0]) for r in rows), f"{name} has a torn row"
            for row in rows[1:]:
                [float(v) for v in row]
    latest = checkpoint.latest_checkpoint(run)
    return 0 if latest is None else checkpoint.read_meta(latest)["counters"]["step"]


def wait_for_training(run: Path, proc: subprocess.Popen, before: int | None) -> None:
    """Until the run dir has been prepared again (config.toml rewritten), or the process ended."""
    config = run / "config.toml"
    while proc.poll() is None:
        if config.exists() and config.stat().st_ino != before:
            return
        time.sleep(0.05)


def steps_of(path: Path) -> list[int]:
    with open(path, newline="", encoding="utf-8") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def newest_step(run: Path) -> int:
    """Step of the newest periodic checkpoint directory, by name (cheap enough to poll)."""
    dirs = checkpoint.checkpoint_dirs(run)
    return int(dirs[-1].name[len(checkpoint.CHECKPOINT_PREFIX) :]) if dirs else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cartpole", choices=sorted(TARGETS))
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--checkpoint-interval", type=int, default=1_000)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for the JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="key=value for the preset"
    )
    args = parser.parse_args()

    env_id, target = TARGETS[args.preset]
    settings = [f"checkpoint_interval={args.checkpoint_interval}", *args.overrides]
    total = build_config(args.preset, None, settings).total_steps
    rng = random.Random(args.seed)
    # Kill moments spread over the whole run: once training passes each of these steps, a
    # random fraction of a checkpoint period later (so some kills land mid-write).
    kill_steps = sorted(int(rng.uniform(0.02, 0.98) * total) for _ in range(args.kills))
    tmp = Path(tempfile.mkdtemp(prefix="crash_resume_"))
    run = args.run_dir or tmp / "run"
    fresh = ["train", env_id, "--preset", args.preset, "--run-dir", str(run), "--no-progress"]
    for setting in settings:
        fresh += ["--set", setting]
    resume = ["train", "--resume", str(run), "--no-progress"]
    log = []
    t0 = time.perf_counter()
    period = 2.0  # seconds per checkpoint interval; measured as training goes
    kills = 0
    for kill_step in kill_steps:
        config = run / "config.toml"
        before = config.stat().st_ino if config.exists() else None
        argv = resume if checkpoint.latest_checkpoint(run) is not None else fresh
        start_step = check_run(run) if argv is resume else 0
        err_path = tmp / f"stderr_{kills + 1}.txt"
        with open(err_path, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(qlearn_command() + argv, stdout=subprocess.DEVNULL, stderr=err)
        wait_for_training(run, proc, before)
        seen, seen_at = newest_step(run), time.monotonic()
        while proc.poll() is None and seen < kill_step:
            time.sleep(0.05)
            if newest_step(run) != seen:
                if seen > start_step:  # a full interval between two new checkpoints
                    period = time.monotonic() - seen_at
                seen, seen_at = newest_step(run), time.monotonic()
        delay = rng.uniform(0.0, period)
        time.sleep(delay)
        if proc.poll() is not None:
            raise SystemExit(f"training ended before kill {kills + 1}: {err_path.read_text()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        reached = check_run(run)
        temporaries = [p.name for p in run.rglob(".*")]
        log.append(
            {
                "kill": kills,
                "resumed_from": start_step,
                "kill_after_step": kill_step,
                "extra_delay_s": round(delay, 2),
                "newest_checkpoint": reached,
                "left_temporaries": temporaries,
            }
        )
        print(
            f"kill {kills:2d}: resumed at step {start_step:6d}, killed {delay:4.2f}s after "
            f"passing step {kill_step:6d}; newest checkpoint {reached:6d}, temporaries left: "
            f"{temporaries or 'none'}",
            flush=True,
        )

    final = subprocess.run(qlearn_command() + resume, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    check_run(run)
    final_step = checkpoint.read_meta(run / "final")["counters"]["step"]
    total = checkpoint.read_meta(run / "final")["counters"]["target_step"]
    train_steps = steps_of(run / "train.csv")
    assert train_steps == list(range(1_000, total + 1, 1_000)), "train.csv rows missing/duplicated"
    episode_steps = steps_of(run / "episodes.csv")
    assert episode_steps == sorted(set(episode_steps)), "episodes.csv rows out of order"

    evals = {}
    for name in ("best", "final"):
        out = subprocess.run(
            [*qlearn_command(), "eval", str(run / name), "--episodes", "20", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        evals[name] = json.loads(out.stdout)
    wall = time.perf_counter() - t0
    solved = evals["best"]["mean_return"] >= target

    print()
    print(
        "| preset | kills | final step | eval best (20 ep) | eval final (20 ep) | solved | wall |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.preset} | {kills} | {final_step}/{total} | "
        f"{evals['best']['mean_return']:.1f} +/- {evals['best']['std_return']:.1f} | "
        f"{evals['final']['mean_return']:.1f} +/- {evals['final']['std_return']:.1f} | "
        f"{'yes' if solved else 'NO'} (>= {target:g}) | {wall:.0f}s |"
    )
    args.results.mkdir(parents=True, exist_ok=True)
    record = {
        "preset": args.preset,
        "seed": args.seed,
        "overrides": args.overrides,
        "kills": log,
        "final_step": final_step,
        "total_steps": total,
        "eval": evals,
        "target": target,
        "solved": solved,
        "wall_s": wall,
    }
    suffix = "_overridden" if args.overrides else ""
    out_path = args.results / f"crash_resume_{args.preset}{suffix}_seed{args.seed}.json"
    out_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {out_path}")
    shutil.rmtree(tmp, ignore_errors=True)
    if not solved:
        sys.exit(1)


if __name__ == "__main__":
    main()
