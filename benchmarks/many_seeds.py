"""Many seeds in one process: N seeds of a preset against one seed, against SB3, and memory.

Measures, each in a fresh subprocess, one after another on the same machine:

- `single`: one run of the preset (`DQN`, seed 0), its whole wall time (training and periodic
  evaluations) and its training time to solve.
- `multi`: N seeds of the same preset in one process (`MultiSeedDQN`, seeds 0..N-1), the same
  figures, and how many seeds solved. The headline ratio is multi's wall time over single's.
- `sb3` (with --sb3, CartPole only): the same N seeds as Stable-Baselines3 processes with the
  rl-baselines3-zoo settings, a pool of one process per core, each stopping when its periodic
  evaluation (20 episodes every eval_interval steps, qlearn's episodes) solves; the time until
  all have solved, against qlearn's multi-seed run stopped when all its seeds have solved.
- `rss`: peak resident memory of a multi-seed run of `--rss-steps` steps for each of
  `--rss-seeds`, with the replay memory filled (buffer_size = rss-steps), and the bytes of the
  replay arrays: the replay grows linearly with the seeds.

Defaults run in a few minutes (4 seeds, 20k steps, no SB3); the issue's full version is
`--num-seeds 16 --steps 0 --sb3 --rss-seeds 1,4,16,64` (steps 0: the preset's total_steps).
`--parts ratio,sb3,rss` runs only the parts named; the JSON is written after each part.

    python benchmarks/many_seeds.py
    python benchmarks/many_seeds.py --num-seeds 16 --steps 0 --sb3 --rss-seeds 1,4,16,64
    python benchmarks/many_seeds.py --preset seeds --num-seeds 16 --steps 50000
    python benchmarks/many_seeds.py --env LunarLander-v3 --preset lunarlander --num-seeds 8
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from typing import Any

from common import add_quick, add_results, make_parser, markdown_table, write_json

EVAL_EPISODES = 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(preset: str, steps: int, eval_interval: int) -> Any:
    from qlearn.presets import load_preset

    config = load_preset(preset)
    changes: dict[str, Any] = {"checkpoint_interval": 0, "checkpoint_minutes": 0}
    if steps:
        changes["total_steps"] = steps
    changes["eval_interval"] = eval_interval  # 0: no evaluations (the memory runs)
    changes["eval_episodes"] = EVAL_EPISODES
    return config.replace(**changes)


def single_run(env_id: str, preset: str, steps: int, eval_interval: int) -> dict[str, Any]:
    """One seed of the preset with `DQN`, the single-run path."""
    from qlearn import DQN

    config = _config(preset, steps, eval_interval)
    solved_at: list[float] = []
    agent = DQN(env_id, config)
    threshold = agent.make_eval_env().spec.reward_threshold

    def on_eval(a: Any, metrics: dict[str, float]) -> None:
        if not solved_at and threshold is not None and metrics["mean_return"] >= threshold:
            solved_at.append(a.counters.wall_time)

    t0 = time.perf_counter()
    agent.learn(callback=on_eval)
    return {
        "num_seeds": 1,
        "wall_s": time.perf_counter() - t0,
        "train_s": agent.counters.wall_time,
        "steps": agent.counters.step,
        "solved": len(solved_at),
        "solve_train_s": solved_at[0] if solved_at else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def multi_run(
    env_id: str,
    preset: str,
    steps: int,
    eval_interval: int,
    num_seeds: int,
    stop_when_solved: bool = False,
    buffer_size: int | None = None,
) -> dict[str, Any]:
    """`num_seeds` seeds of the preset in one process with `MultiSeedDQN`."""
    from qlearn.train.multi_seed import MultiSeedDQN

    config = _config(preset, steps, eval_interval)
    if buffer_size is not None:
        config = config.replace(buffer_size=buffer_size)
    runs = MultiSeedDQN(env_id, config, num_seeds)

    def all_solved(r: MultiSeedDQN, step: int) -> bool:
        return not all(sc.solved_step is not None for sc in r.seed_counters)

    t0 = time.perf_counter()
    runs.learn(callback=all_solved if stop_when_solved else None)
    solved = [sc.solved_time for sc in runs.seed_counters if sc.solved_time is not None]
    return {
        "num_seeds": num_seeds,
        "wall_s": time.perf_counter() - t0,
        "train_s": runs.counters.wall_time,
        "steps": runs.counters.step,
        "solved": len(solved),
        "solve_train_s": sorted(solved),
        "all_solved_train_s": max(solved) if len(solved) == num_seeds else None,
        "engine": type(runs.learner).__name__,
        "replay_mb": sum(r.nbytes for r in runs.learner.replays) / 2**20,
        "peak_rss_mb": _peak_rss_mb(),
    }


def sb3_until_solved(seed: int, budget: int, eval_interval: int) -> dict[str, Any]:
    """One SB3 DQN run (zoo settings, as benchmarks/speed.py runs it) until it solves."""
    import torch
    from speed import SOLVED, ZOO, _greedy_eval
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.callbacks import BaseCallback

    from qlearn.evaluation import periodic_eval_seed

    torch.set_num_threads(1)
    evals: list[float] = []
    eval_time = 0.0

    class PeriodicEval(BaseCallback):
        def _on_step(self) -> bool:
            nonlocal eval_time
            if self.num_timesteps % eval_interval:
                return True
            t = time.perf_counter()
            score = _greedy_eval(
                lambda o: int(self.model.predict(o, deterministic=True)[0]),
                periodic_eval_seed(seed, len(evals)),
            )
            eval_time += time.perf_counter() - t
            evals.append(score)
            return score < SOLVED

    zoo = {k: v for k, v in ZOO.items() if k != "net_arch"}
    t0 = time.perf_counter()
    model = SB3DQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": ZOO["net_arch"]},
        **zoo,
    )
    model.learn(budget, callback=PeriodicEval())
    wall = time.perf_counter() - t0
    return {
        "seed": seed,
        "solved": bool(evals) and evals[-1] >= SOLVED,
        "wall_s": wall,
        "train_s": wall - eval_time,
        "steps": int(model.num_timesteps),
    }


def sb3_pool(num_seeds: int, budget: int, eval_interval: int) -> dict[str, Any]:
    """All seeds as SB3 processes, one per core; the wall time until every one has stopped."""
    ctx = mp.get_context("spawn")
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    with ctx.Pool(cores) as pool:
        runs = pool.starmap(
            sb3_until_solved, [(seed, budget, eval_interval) for seed in range(num_seeds)]
        )
    wall = time.perf_counter() - t0
    solved = sum(r["solved"] for r in runs)
    return {
        "processes": cores,
        "num_seeds": num_seeds,
        "wall_until_all_stopped_s": wall,
        "solved": solved,
        "runs": runs,
    }


def _in_subprocess(fn: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = make_parser(__doc__)
    add_results(parser)
    add_quick(parser)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--preset", default="cartpole")
    parser.add_argument("--num-seeds", type=int, default=4)
    parser.add_argument(
        "--steps", type=int, default=20_000, help="env steps per seed; 0: the preset's own"
    )
    parser.add_argument("--eval-interval", type=int, default=2_500)
    parser.add_argument(
        "--parts", default="ratio,rss", help="comma-separated: ratio, sb3 (CartPole only), rss"
    )
    parser.add_argument("--sb3", action="store_true", help="add the sb3 part")
    parser.add_argument("--rss-seeds", default="1,4,16", help="seed counts for the memory table")
    parser.add_argument("--rss-steps", type=int, default=3_000)
    args = parser.parse_args()
    if args.quick:
        args.num_seeds, args.steps, args.eval_interval = 2, 1_500, 500
        args.rss_seeds, args.rss_steps = "1,2", 1_200
    parts = {p for p in args.parts.split(",") if p} | ({"sb3"} if args.sb3 else set())
    rss_seeds = [int(s) for s in args.rss_seeds.split(",") if s]
    common = (args.env, args.preset, args.steps, args.eval_interval)
    report: dict[str, Any] = {"env": args.env, "preset": args.preset, "quick": args.quick}
    name = "_".join(["many_seeds", args.preset, *sorted(parts)]) + ("_quick" if args.quick else "")
    path = args.results / f"{name}.json"

    if "ratio" in parts:
        single = _in_subprocess(single_run, *common)
        multi = _in_subprocess(multi_run, *common, args.num_seeds)
        report["single"], report["multi"] = single, multi
        report["wall_ratio"] = multi["wall_s"] / single["wall_s"]
        report["train_ratio"] = multi["train_s"] / single["train_s"]
        report["throughput_per_seed_ratio"] = args.num_seeds / report["wall_ratio"]
        rows = [
            ["1 seed (DQN)", f"{single['wall_s']:.1f}", f"{single['train_s']:.1f}", "1.0x",
             f"{single['solved']}/1"],
            [f"{args.num_seeds} seeds (MultiSeedDQN)", f"{multi['wall_s']:.1f}",
             f"{multi['train_s']:.1f}", f"{report['wall_ratio']:.2f}x",
             f"{multi['solved']}/{args.num_seeds}"],
        ]  # fmt: skip
        print(f"{args.env}, preset {args.preset}, {multi['steps']} steps per seed, engine "
              f"{multi['engine']}")  # fmt: skip
        print(markdown_table(["run", "wall (s)", "training (s)", "wall vs 1 seed", "solved"], rows))
        print(f"throughput per seed: {report['throughput_per_seed_ratio']:.2f}x a single run's")
        write_json(path, report)

    if "sb3" in parts:
        budget = args.steps or 50_000
        # qlearn stopped when every seed has solved, against SB3 processes each stopped when
        # it has solved.
        until = _in_subprocess(multi_run, *common, args.num_seeds, True)
        sb3 = sb3_pool(args.num_seeds, budget, args.eval_interval)
        report["qlearn_until_solved"], report["sb3"] = until, sb3
        ratio = sb3["wall_until_all_stopped_s"] / until["wall_s"]
        report["sb3_ratio"] = ratio
        rows = [
            ["qlearn", f"{args.num_seeds} seeds, one process", f"{until['wall_s']:.1f}",
             f"{until['solved']}/{args.num_seeds}"],
            ["SB3", f"{args.num_seeds} processes, {sb3['processes']} at a time",
             f"{sb3['wall_until_all_stopped_s']:.1f}", f"{sb3['solved']}/{args.num_seeds}"],
        ]  # fmt: skip
        print(markdown_table(["library", "setup", "wall until all stopped (s)", "solved"], rows))
        print(f"SB3 / qlearn: {ratio:.1f}x")
        write_json(path, report)

    if "rss" in parts:
        rss_rows, report["rss"] = [], []
        for n in rss_seeds:
            r = _in_subprocess(
                multi_run, args.env, args.preset, args.rss_steps, 0, n, False, args.rss_steps
            )
            report["rss"].append(r)
            rss_rows.append([n, f"{r['peak_rss_mb']:.0f}", f"{r['replay_mb']:.1f}"])
        print(f"{args.rss_steps} steps per seed, replay buffer_size {args.rss_steps} (full)")
        print(markdown_table(["seeds", "peak RSS (MB)", "replay arrays (MB)"], rss_rows))
        write_json(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
