"""Env steps per second on ALE/Pong-v5 with the Nature CNN, on this machine's CPU.

Three modes, each over --steps env steps of one env (4 stacked 84x84 frames, sticky actions):
  env      random actions: the emulator, AtariPreprocessing and frame stacking alone
  act      DQN.learn with no updates: a greedy Nature-CNN forward pass every step (epsilon 0)
           and the frame-sharing replay buffer's adds
  train    DQN.learn updating every 4 steps on batches of 32 (the atari preset), after a
           warm-up of --warmup steps that is timed separately

    .venv/bin/python benchmarks/atari_throughput.py
    .venv/bin/python benchmarks/atari_throughput.py --steps 2000 --threads 2
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch
from common import add_results, make_parser, write_json

from qlearn import DQN
from qlearn.envs import make_env
from qlearn.presets import load_preset

ENV_ID = "ALE/Pong-v5"


def env_only(steps: int) -> float:
    env = make_env(ENV_ID)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(6)))
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def with_agent(steps: int, threads: int, *, train: bool, warmup: int) -> tuple[float, int]:
    """Steps/s of DQN.learn over `steps` steps (after `warmup` untimed ones when training)."""
    config = load_preset("atari").replace(
        total_steps=warmup + steps,
        buffer_size=max(10_000, warmup + steps),
        learning_starts=warmup if train else warmup + steps + 1,
        epsilon_start=0.0,
        epsilon_end=0.0,
        eval_interval=0,
        torch_threads=threads,
    )
    agent = DQN(ENV_ID, config)
    if warmup:
        agent.learn(warmup)
    start = time.perf_counter()
    agent.learn(steps)  # `steps` more
    return steps / (time.perf_counter() - start), agent.learner.num_updates


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=200, help="steps before updates start")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    add_results(parser)
    args = parser.parse_args()

    rows = {"env": env_only(args.steps)}
    rows["act"], _ = with_agent(args.steps, args.threads, train=False, warmup=0)
    rows["train"], updates = with_agent(args.steps, args.threads, train=True, warmup=args.warmup)
    print(f"{ENV_ID}, {args.steps} env steps per mode, torch threads {args.threads}")
    print(f"{'mode':<8} {'steps/s':>9} {'frames/s':>9}")
    for mode, sps in rows.items():
        print(f"{mode:<8} {sps:>9.1f} {4 * sps:>9.1f}")
    print(f"(train: {updates} updates of batch 32, one every 4 steps)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    result = {
        "env_id": ENV_ID,
        "steps": args.steps,
        "torch_threads": args.threads,
        "steps_per_s": rows,
        "updates": updates,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),  # other work on the machine slows every mode
    }
    out = write_json(args.results / "atari_throughput.json", result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
