"""Train a preset over several seeds and evaluate what it keeps, greedily, on fresh episodes.

For each seed: train with the preset (periodic evaluations keep the best model), then evaluate
the best and the final model over 20 episodes whose seeds the training never saw. A seed passes
when the best model's fresh evaluation reaches the threshold. Runs go in parallel subprocesses
(one torch thread each); `--determinism` also trains seed 0 twice and compares every tensor.

    python benchmarks/presets.py --env CartPole-v1 --preset cartpole --threshold 475
    python benchmarks/presets.py --env LunarLander-v3 --preset lunarlander --seeds 0,1,2 \
        --threshold 200
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from common import add_results, add_seeds, make_parser, markdown_table, write_json

EVAL_SEED = 987_654  # never used by training or its periodic evaluations


def run_seed(env_id: str, preset: str, seed: int, run_root: str, steps: int | None) -> dict:
    import torch

    from qlearn import DQN
    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    config = load_preset(preset).replace(seed=seed)
    if steps is not None:
        config = config.replace(total_steps=steps)
    run_dir = Path(run_root) / f"{preset}_s{seed}"
    t0 = time.perf_counter()
    agent = DQN(env_id, config, run_dir=run_dir)
    agent.learn()
    wall = time.perf_counter() - t0
    final = agent.evaluate(20, seed=EVAL_SEED)
    best = DQN.load(run_dir / "best").evaluate(20, seed=EVAL_SEED)
    digest = hashlib.sha256()
    for key, tensor in sorted(agent.learner.tensors().items()):
        if key.startswith("q_net."):
            digest.update(tensor.numpy().tobytes())
    return {
        "seed": seed,
        "steps": agent.counters.step,
        "train_time_s": agent.counters.wall_time,
        "wall_s": wall,
        "best_periodic_eval": agent.counters.best_eval,
        "best_fresh_mean": best.mean_return,
        "best_fresh_std": best.std_return,
        "final_fresh_mean": final.mean_return,
        "final_fresh_std": final.std_return,
        "weights_sha256": digest.hexdigest(),
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--env", required=True)
    parser.add_argument("--preset", required=True)
    add_seeds(parser, "0,1,2,3,4")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--determinism", action="store_true")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-presets"))
    add_results(parser)
    args = parser.parse_args()
    seeds = args.seeds
    jobs: list[tuple[Any, ...]] = [
        (args.env, args.preset, s, str(args.runs), args.steps) for s in seeds
    ]
    if args.determinism:
        jobs.append((args.env, args.preset, seeds[0], str(args.runs / "repeat"), args.steps))
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.starmap(run_seed, jobs)
    runs = results[: len(seeds)]
    print(
        f"\n{args.preset} on {args.env}: best model (kept by periodic evaluation) and final "
        f"model, each over 20 fresh episodes; pass = best >= {args.threshold:g}\n"
    )
    header = ["seed", "steps", "train time (s)", "best periodic eval", "best, fresh"]
    rows = [
        [
            r["seed"],
            r["steps"],
            f"{r['train_time_s']:.0f}",
            f"{r['best_periodic_eval']:.1f}",
            f"{r['best_fresh_mean']:.1f} +/- {r['best_fresh_std']:.1f}",
            f"{r['final_fresh_mean']:.1f} +/- {r['final_fresh_std']:.1f}",
        ]
        for r in runs
    ]
    print(markdown_table([*header, "final, fresh"], rows))
    passed = sum(r["best_fresh_mean"] >= args.threshold for r in runs)
    print(f"\npassed: {passed}/{len(runs)}")
    report: dict[str, Any] = {
        "env": args.env,
        "preset": args.preset,
        "threshold": args.threshold,
        "passed": passed,
        "runs": runs,
    }
    if args.determinism:
        same = results[-1]["weights_sha256"] == runs[0]["weights_sha256"]
        report["determinism_identical"] = same
        print(f"determinism: seed {seeds[0]} trained twice -> identical weights: {same}")
    out = write_json(args.results / f"preset_{args.preset}.json", report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
