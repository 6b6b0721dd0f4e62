"""Crash and resume: train a preset with `qlearn train` and its default checkpoint settings,
SIGKILL it at random moments, resume each time with `qlearn train --resume`, then check that
nothing was lost and the result still solves the task.

Kill moments are spread over the run: once the progress bar passes each of `--kills` random
steps, a random delay of up to the time of 1,000 more steps. After every kill, each checkpoint
left on disk must pass its size and SHA-256 checks and load, and the CSV logs must read as a
resume reads them; at the end the run must have reached its last step with no missing or
duplicated log rows, and `qlearn eval RUN` (the best model, 20 greedy episodes) must reach the
preset's target. The table of kills shows how many steps each crash cost (the steps trained
since the newest checkpoint). The CI version of this check is tests/train/test_crash_safety.py
(short runs, no learning target).

    .venv/bin/python benchmarks/crash_resume.py                # cartpole, 10 kills
    .venv/bin/python benchmarks/crash_resume.py --kills 20 --seed 1
    .venv/bin/python benchmarks/crash_resume.py --set checkpoint_interval=1000 --set ...
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from common import add_results, make_parser, markdown_table, write_json

from qlearn import checkpoint
from qlearn.cli.dqn import build_config
from qlearn.monitor import read_log
from qlearn.train import DQN

TARGETS = {"cartpole": ("CartPole-v1", 475.0)}
PROGRESS = re.compile(r"(\d+)/\d+ \[")  # tqdm's "12000/50000 [00:10<00:32, ...]"


def qlearn_command() -> list[str]:
    script = Path(sys.executable).with_name("qlearn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from qlearn.cli import main; main()"]


def check_run(run: Path) -> int:
    """Load every checkpoint on disk and read every CSV log as a resume does (only a last row
    may be cut off); the newest checkpoint's step."""
    for path in checkpoint.checkpoint_dirs(run):
        DQN.load(path, with_replay=True)
    for name in ("best", "final"):
        if (run / name).exists():
            DQN.load(run / name)
    for name in ("episodes.csv", "train.csv", "evals.csv"):
        header, rows = read_log(run / name)
        if header is not None:
            lines = (run / name).read_text(encoding="utf-8").count("\n")
            assert len(rows) == lines - 1, f"{name} has a torn row before its last"
            for row in rows:
                [float(v) for v in row]
    latest = checkpoint.latest_checkpoint(run)
    return 0 if latest is None else checkpoint.read_meta(latest)["counters"]["step"]


def start_training(argv: list[str], err_path: Path) -> subprocess.Popen:
    """Start `qlearn` with its stderr on a pseudo-terminal, copied to `err_path` as it comes.

    On a terminal `qlearn` draws its progress bar, redrawn every step or so; into a file it
    writes a line per tenth of the run, too coarse to kill at random moments.
    """
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen(qlearn_command() + argv, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)

    def copy() -> None:
        with open(err_path, "wb") as err:
            while True:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: the process has gone and closed the terminal
                    break
                if not data:
                    break
                err.write(data)
                err.flush()
        os.close(controller)

    threading.Thread(target=copy, daemon=True).start()
    return proc


def bar_step(err_path: Path) -> int | None:
    """The step the process's progress bar last showed on stderr (None before it shows)."""
    found = PROGRESS.findall(err_path.read_text(encoding="utf-8", errors="replace")[-4000:])
    return int(found[-1]) if found else None


def steps_of(path: Path) -> list[int]:
    with open(path, newline="", encoding="utf-8") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--preset", default="cartpole", choices=sorted(TARGETS))
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary dir")
    add_results(parser)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="key=value for the preset"
    )
    args = parser.parse_args()

    env_id, target = TARGETS[args.preset]
    config = build_config(args.preset, None, args.overrides)
    total = config.total_steps
    rng = random.Random(args.seed)
    # Kill moments spread over the run, ending early enough that the random delay after the
    # last one cannot reach the end of training.
    kill_steps = sorted(int(rng.uniform(0.02, 0.9) * total) for _ in range(args.kills))
    tmp = Path(tempfile.mkdtemp(prefix="crash_resume_"))
    run = args.run_dir or tmp / "run"
    fresh = ["train", env_id, "--preset", args.preset, "--run-dir", str(run)]
    for setting in args.overrides:
        fresh += ["--set", setting]
    resume = ["train", "--resume", str(run)]
    log = []
    t0 = time.perf_counter()
    period = 1.0  # seconds per 1,000 steps (one progress-bar update); measured as training goes
    kills = 0
    for kill_step in kill_steps:
        argv = resume if checkpoint.latest_checkpoint(run) is not None else fresh
        start_step = check_run(run) if argv is resume else 0
        err_path = tmp / f"stderr_{kills + 1}.txt"
        err_path.touch()
        proc = start_training(argv, err_path)
        seen, seen_at = None, time.monotonic()
        while proc.poll() is None:
            step = bar_step(err_path)
            if step != seen:
                if seen is not None and step is not None and step > seen:
                    period = (time.monotonic() - seen_at) * 1_000 / (step - seen)
                seen, seen_at = step, time.monotonic()
            if seen is not None and seen >= kill_step:
                break
            time.sleep(0.02)
        delay = rng.uniform(0.0, period)
        time.sleep(delay)
        if proc.poll() is not None:
            raise SystemExit(f"training ended before kill {kills + 1}: {err_path.read_text()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = bar_step(err_path) or start_step
        kills += 1
        reached = check_run(run)
        temporaries = [p.name for p in run.rglob(".*")]
        log.append(
            {
                "kill": kills,
                "resumed_from": start_step,
                "kill_after_step": kill_step,
                "extra_delay_s": round(delay, 2),
                "killed_at_step": killed_at,
                "newest_checkpoint": reached,
                "steps_lost": max(killed_at - reached, 0),
                "left_temporaries": temporaries,
            }
        )
        print(
            f"kill {kills:2d}: resumed at step {start_step:6d}, killed {delay:4.2f}s after "
            f"passing step {kill_step:6d} (at ~{killed_at:6d}); newest checkpoint {reached:6d}, "
            f"steps lost ~{max(killed_at - reached, 0):5d}; temporaries left: "
            f"{temporaries or 'none'}",
            flush=True,
        )

    final = subprocess.run(
        [*qlearn_command(), *resume, "--no-progress"], capture_output=True, text=True
    )
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

    lost = [k["steps_lost"] for k in log]
    header = ["preset", "kills", "steps lost per kill (mean / max)", "final step"]
    header += ["eval best (20 ep)", "eval final (20 ep)", "solved", "wall"]
    row = [
        args.preset,
        kills,
        f"{sum(lost) / len(lost):.0f} / {max(lost)}",
        f"{final_step}/{total}",
        f"{evals['best']['mean_return']:.1f} +/- {evals['best']['std_return']:.1f}",
        f"{evals['final']['mean_return']:.1f} +/- {evals['final']['std_return']:.1f}",
        f"{'yes' if solved else 'NO'} (>= {target:g})",
        f"{wall:.0f}s",
    ]
    print()
    print(markdown_table(header, [row]))
    record = {
        "preset": args.preset,
        "seed": args.seed,
        "overrides": args.overrides,
        "checkpoint_settings": {
            k: getattr(config, k)
            for k in ("checkpoint_interval", "checkpoint_minutes", "checkpoint_max_overhead")
        },
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
    write_json(out_path, record)
    print(f"wrote {out_path}")
    shutil.rmtree(tmp, ignore_errors=True)
    if not solved:
        sys.exit(1)


if __name__ == "__main__":
    main()
