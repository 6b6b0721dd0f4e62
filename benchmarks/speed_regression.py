"""This tree's speed against an earlier commit's, in one script, runs alternating.

A redesign must keep the speed (issue #12): this runs `speed.py`'s qlearn measurements (time to
solve CartPole with the `cartpole` preset, the engine run at the zoo's settings, steps/s with 1, 8
and 32 envs) once with this tree's `src/` and once with the `src/` of `--base` (default: c4af24c,
the commit before the redesign, whose speed the README reported), alternating base and new run by
run so that a busy machine slows both alike. Each run is a fresh interpreter whose PYTHONPATH puts
one tree's `src/` first; the measuring code is this tree's `speed.py` for both.

Ratios are new / base: time ratios below 1 and rate ratios above 1 mean this tree is faster. Same
seed, same steps: where the two trees learn bit-identically, the steps to solve match too.

    python benchmarks/speed_regression.py                 # 5 solve seeds, 3 engine, 3 throughput
    python benchmarks/speed_regression.py --parts instructions   # instructions per env step
    python benchmarks/speed_regression.py --quick         # a smoke version for CI

Wall-clock and CPU-time ratios on a shared VM move by 15-20% between two runs of the same pair
of commits. The `instructions` part does not: it counts the instructions each tree executes
per env step under valgrind's callgrind (`speed.counted_segment`: the `cartpole` preset that the
time-to-solve run trains, the zoo's settings that the engine run trains, and the throughput
configuration with 1, 8 and 32 envs), the same count on every run whatever else the machine
does. Both trees learn bit-identically, so equal work per step means an equal time to solve.
It needs valgrind (Debian's `valgrind` package) and takes about 15 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

from common import HERE, add_quick, add_results, add_seeds, make_parser, markdown_table, write_json

ROOT = HERE.parent
DEFAULT_BASE = "c4af24c"


def export_src(commit: str, into: Path) -> Path:
    """`src/` of `commit`, unpacked under `into` (git archive; the work tree is not touched)."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_worker(src: Path, call: str) -> dict[str, Any]:
    """Evaluate `speed.<call>` in a fresh interpreter importing qlearn from `src`."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import speed\n"
        f"print('RESULT ' + json.dumps(speed.{call}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"speed.{call} failed with {src}:\n{done.stderr[-2000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


INSTRUCTION_CONFIGS = {"preset": 4000, "zoo": 512, "envs1": 4000, "envs8": 4000, "envs32": 4000}
"""Env steps counted per configuration of the `instructions` part. The zoo's settings do 128
gradient steps on a 256x256 network every 256 env steps, which callgrind runs ~50x slower than
the CPU: 512 steps (two of those phases) take it about 10 minutes."""


def count_instructions(tree: str, src: Path, config_name: str, steps: int, out_dir: Path) -> int:
    """Instructions executed by `speed.counted_segment(config_name, steps)` with `src`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{tree}.{config_name}.callgrind"
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import speed\n"
        f"speed.counted_segment({config_name!r}, {steps})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    command = [
        "valgrind",
        "--tool=callgrind",
        "--dump-before=getppid",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        code,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind of {config_name} failed with {src}:\n{done.stderr[-2000:]}")
    # Dump 1 ends at the first getppid, dump 2 (the segment) at the second.
    for line in Path(f"{out}.2").read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}.2")


def _ratio(new: list[float], base: list[float]) -> float:
    return statistics.median(new) / statistics.median(base)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--base", default=DEFAULT_BASE, help="commit to compare with")
    add_seeds(parser, "0,1,2,3,4")
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--eval-interval", type=int, default=2_500)
    parser.add_argument("--engine-steps", type=int, default=50_000)
    parser.add_argument("--throughput-steps", type=int, default=20_000)
    parser.add_argument("--throughput-repeats", type=int, default=3)
    parser.add_argument(
        "--parts",
        default="solve,engine,throughput",
        help="comma-separated subset of solve,engine,throughput,cpu,instructions (default: "
        "%(default)s); cpu: the throughput configuration in CPU seconds, best of 3; "
        "instructions: instructions per env step under callgrind (needs valgrind); "
        "--instruction-configs picks its configurations",
    )
    parser.add_argument(
        "--instruction-configs",
        default=",".join(INSTRUCTION_CONFIGS),
        help="comma-separated subset of %(default)s for the instructions part",
    )
    add_quick(parser)
    add_results(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budget, args.eval_interval = args.seeds[:1], 2_000, 1_000
        args.engine_steps, args.throughput_steps, args.throughput_repeats = 1_500, 1_000, 1
    base_commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    trees = {"new": ROOT / "src"}
    report: dict[str, Any] = {"base": base_commit, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        trees["base"] = export_src(base_commit, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {
            "solve": [],
            "engine": [],
            "throughput": [],
            "cpu": [],
            "instructions": [],
        }
        parts = set(args.parts.split(","))
        for seed in args.seeds if "solve" in parts else []:
            for name, src in trees.items():
                r = run_worker(src, f"qlearn_solve({seed}, {args.budget}, {args.eval_interval})")
                runs["solve"].append({"tree": name, **r})
                print(
                    f"solve {name:4s} seed {seed}: solved={r['solved']} steps {r['steps']} "
                    f"train {r['train_time_s']:.1f}s ({r['steps_per_s']:.0f} steps/s)",
                    flush=True,
                )
        for seed in args.seeds[:3] if "engine" in parts else []:
            for name, src in trees.items():
                r = run_worker(src, f"qlearn_engine({seed}, {args.engine_steps})")
                runs["engine"].append({"tree": name, **r})
                print(f"engine {name:4s} seed {seed}: {r['wall_s']:.1f}s", flush=True)
        for repeat in range(args.throughput_repeats if "throughput" in parts else 0):
            for name, src in trees.items():
                r = run_worker(src, f"throughput({args.throughput_steps}, [1, 8, 32])")
                runs["throughput"].append({"tree": name, "repeat": repeat, **r})
                rates = ", ".join(
                    f"{row['num_envs']}: {row['qlearn_steps_per_s']:.0f}" for row in r["rows"]
                )
                print(f"throughput {name:4s} repeat {repeat}: {rates} steps/s", flush=True)
        for repeat in range(args.throughput_repeats if "cpu" in parts else 0):
            for name, src in trees.items():
                r = run_worker(src, f"cpu_throughput({args.throughput_steps // 2}, [1, 8, 32])")
                runs["cpu"].append({"tree": name, "repeat": repeat, **r})
                rates = ", ".join(
                    f"{row['num_envs']}: {row['cpu_steps_per_s']:.0f}" for row in r["rows"]
                )
                print(f"cpu {name:4s} repeat {repeat}: {rates} steps per CPU-s", flush=True)
        if "instructions" in parts:
            if shutil.which("valgrind") is None:
                raise SystemExit("the instructions part needs valgrind (apt install valgrind)")
            chosen = args.instruction_configs.split(",")
            unknown = sorted(set(chosen) - set(INSTRUCTION_CONFIGS))
            if unknown:
                raise SystemExit(f"unknown --instruction-configs {unknown}")
            steps = {k: (400 if args.quick else INSTRUCTION_CONFIGS[k]) for k in chosen}
            jobs = [(name, src, config) for config in steps for name, src in trees.items()]
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                counts = list(
                    pool.map(
                        lambda j: count_instructions(
                            j[0], j[1], j[2], steps[j[2]], Path(tmp) / "callgrind"
                        ),
                        jobs,
                    )
                )
            for (name, _, config), count in zip(jobs, counts, strict=True):
                per_step = count / steps[config]
                runs["instructions"].append(
                    {"tree": name, "config": config, "instructions_per_step": per_step}
                )
                print(f"instructions {name:4s} {config}: {per_step:,.0f} per env step", flush=True)
    report["runs"] = runs

    def of(kind: str, tree: str, key: str) -> list[float]:
        # An unsolved seed counts at its full training time, as in speed.py.
        rows = [r for r in runs[kind] if r["tree"] == tree]
        if key == "time_to_solve_s":
            return [r["time_to_solve_s"] or r["train_time_s"] for r in rows]
        return [r[key] for r in rows]

    summary: dict[str, float] = {}
    if runs["solve"]:
        summary["time_to_solve_new_over_base"] = _ratio(
            of("solve", "new", "time_to_solve_s"), of("solve", "base", "time_to_solve_s")
        )
        same_steps = [
            a["steps"] == b["steps"]
            for a, b in zip(runs["solve"][0::2], runs["solve"][1::2], strict=True)
        ]
        summary["solve_seeds_with_equal_steps"] = sum(same_steps)
    if runs["engine"]:
        summary["engine_wall_new_over_base"] = _ratio(
            of("engine", "new", "wall_s"), of("engine", "base", "wall_s")
        )
    for i, num_envs in enumerate((1, 8, 32) if runs["throughput"] else ()):
        rate = {
            t: [r["rows"][i]["qlearn_steps_per_s"] for r in runs["throughput"] if r["tree"] == t]
            for t in trees
        }
        summary[f"steps_per_s_{num_envs}_envs_new_over_base"] = _ratio(rate["new"], rate["base"])
    for i, num_envs in enumerate((1, 8, 32) if runs["cpu"] else ()):
        rate = {
            t: [r["rows"][i]["cpu_steps_per_s"] for r in runs["cpu"] if r["tree"] == t]
            for t in trees
        }
        summary[f"cpu_steps_per_s_{num_envs}_envs_new_over_base"] = _ratio(
            rate["new"], rate["base"]
        )
    for config in dict.fromkeys(r["config"] for r in runs["instructions"]):
        per = {
            r["tree"]: r["instructions_per_step"]
            for r in runs["instructions"]
            if r["config"] == config
        }
        summary[f"instructions_per_step_{config}_new_over_base"] = per["new"] / per["base"]
    report["summary"] = summary
    print(
        markdown_table(
            ["measure", f"new / base ({base_commit})"],
            [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in summary.items()],
        )
    )
    out = write_json(args.results / "speed_regression.json", report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
