"""Checkpoint overhead: train a preset with the default periodic checkpoints and with them off.

For each seed, two runs in fresh processes, one after the other (the order alternates from seed
to seed, so a change in the machine's load does not favour one side): the preset as it is, and
the preset with `checkpoint_interval = 0` and `checkpoint_minutes = 0`. Both save the best and
final models; only the first writes periodic checkpoints with the replay buffer. Two figures:
the difference in training wall time between the two runs, which the machine's load blurs, and
the time spent inside `save_checkpoint` as a share of the checkpointing run's wall time, which
is measured directly and does not depend on load. The two runs of a seed must also end with the
same weights: checkpoints never change what is learned.

    python benchmarks/checkpoint_overhead.py                           # cartpole, seeds 0,1,2
    python benchmarks/checkpoint_overhead.py --seeds 0,1,2,3 --steps 20000
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from common import add_results, add_seeds, make_parser, markdown_table, write_json

ENVS = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3", "frozenlake": "FrozenLake-v1"}


def train_once(
    env_id: str, preset: str, seed: int, periodic: bool, run_dir: str, steps: int | None
) -> dict:
    """One training run in this (fresh) process; times each save_checkpoint call."""
    import torch

    from qlearn import DQN
    from qlearn.presets import load_preset

    torch.set_num_threads(1)
    config = load_preset(preset).replace(seed=seed)
    if steps is not None:
        config = config.replace(total_steps=steps)
    if not periodic:
        config = config.replace(checkpoint_interval=0, checkpoint_minutes=0.0)
    saves: list[tuple[int, float]] = []

    class TimedDQN(DQN):
        def save_checkpoint(self) -> Path:
            t0 = time.perf_counter()
            path = super().save_checkpoint()
            saves.append((self.counters.step, time.perf_counter() - t0))
            return path

    agent = TimedDQN(env_id, config, run_dir=run_dir)
    t0 = time.perf_counter()
    agent.learn()
    wall = time.perf_counter() - t0
    digest = hashlib.sha256()
    for key, tensor in sorted(agent.learner.tensors().items()):
        if key.startswith("q_net."):
            digest.update(tensor.numpy().tobytes())
    newest = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    size = sum(f.stat().st_size for f in newest[-1].iterdir()) if newest else 0
    return {
        "seed": seed,
        "periodic": periodic,
        "steps": agent.counters.step,
        "wall_s": wall,
        "checkpoints": [step for step, _ in saves],
        "checkpoint_s": sum(s for _, s in saves),
        "checkpoint_bytes": size,
        "weights_sha256": digest.hexdigest(),
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--preset", default="cartpole", choices=sorted(ENVS))
    add_seeds(parser, "0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    add_results(parser)
    args = parser.parse_args()
    seeds = args.seeds
    env_id = ENVS[args.preset]

    runs: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="checkpoint_overhead_") as tmp:
        for i, seed in enumerate(seeds):
            order = [True, False] if i % 2 == 0 else [False, True]
            for periodic in order:
                run_dir = str(Path(tmp) / f"s{seed}_{'on' if periodic else 'off'}")
                # A fresh process per run: no run inherits another's warm caches or imports.
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    row = pool.submit(
                        train_once, env_id, args.preset, seed, periodic, run_dir, args.steps
                    ).result()
                runs.append(row)
                print(
                    f"seed {seed} checkpoints {'on ' if periodic else 'off'}: "
                    f"{row['wall_s']:.1f}s, {len(row['checkpoints'])} checkpoints "
                    f"({row['checkpoint_s']:.3f}s)",
                    flush=True,
                )

    table = []
    for seed in seeds:
        on = next(r for r in runs if r["seed"] == seed and r["periodic"])
        off = next(r for r in runs if r["seed"] == seed and not r["periodic"])
        table.append(
            {
                "seed": seed,
                "wall_off_s": off["wall_s"],
                "wall_on_s": on["wall_s"],
                "difference": on["wall_s"] / off["wall_s"] - 1.0,
                "checkpoints": on["checkpoints"],
                "checkpoint_s": on["checkpoint_s"],
                "share": on["checkpoint_s"] / on["wall_s"],
                "same_weights": on["weights_sha256"] == off["weights_sha256"],
            }
        )
    wall_on = sum(r["wall_on_s"] for r in table)
    wall_off = sum(r["wall_off_s"] for r in table)
    total_share = sum(r["checkpoint_s"] for r in table) / wall_on
    lines = [
        [
            row["seed"],
            f"{row['wall_off_s']:.1f}",
            f"{row['wall_on_s']:.1f}",
            f"{100 * row['difference']:+.1f}%",
            len(row["checkpoints"]),
            f"{row['checkpoint_s']:.3f}",
            f"{100 * row['share']:.2f}%",
            "yes" if row["same_weights"] else "NO",
        ]
        for row in table
    ]
    lines.append(
        [
            "all",
            f"{wall_off:.1f}",
            f"{wall_on:.1f}",
            f"{100 * (wall_on / wall_off - 1):+.1f}%",
            sum(len(r["checkpoints"]) for r in table),
            f"{sum(r['checkpoint_s'] for r in table):.3f}",
            f"{100 * total_share:.2f}%",
            "yes" if all(r["same_weights"] for r in table) else "NO",
        ]
    )
    header = ["seed", "wall, off (s)", "wall, on (s)", "difference", "checkpoints"]
    print()
    print(
        markdown_table([*header, "in save_checkpoint (s)", "share of wall", "same weights"], lines)
    )
    record = {
        "preset": args.preset,
        "env_id": env_id,
        "seeds": seeds,
        "steps": args.steps,
        "checkpoint_bytes": max(r["checkpoint_bytes"] for r in runs),
        "share_in_save_checkpoint": total_share,
        "wall_difference": wall_on / wall_off - 1.0,
        "per_seed": table,
        "runs": runs,
    }
    out = write_json(args.results / f"checkpoint_overhead_{args.preset}.json", record)
    print(f"wrote {out}")
    if not all(r["same_weights"] for r in table):
        raise SystemExit("checkpointing changed the learned weights")


if __name__ == "__main__":
    main()
