"""Epsilon-greedy against softmax (Boltzmann) exploration: tabular Q-learning on FrozenLake-v1.

Both methods train the same Q-table agent on the slippery 4x4 lake, over several seeds; only the
rule that picks the action while training differs:

- epsilon-greedy: a uniform random action with probability epsilon, else the best one; epsilon
  falls linearly from 1 to 0.01 over the first half of training;
- softmax: action a with probability exp(Q(s, a) / T) / sum_b exp(Q(s, b) / T), temperature T.

Every tenth of the training the greedy policy (no exploration) is scored on episodes of its own.
The figure shows, for each method, the mean over seeds and the range from the worst to the best
seed: on the left the greedy policy's success rate, on the right the success rate of the
exploring agent while it trains (what exploration costs on the way).

    python examples/07_exploration_comparison.py           # full: 5 seeds x 10,000 episodes
    python examples/07_exploration_comparison.py --quick   # 3 seeds x 1,500 (or QLEARN_QUICK=1)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files only, never open a window

import matplotlib.pyplot as plt
import numpy as np

from qlearn import TabularConfig
from qlearn.agents.tabular import TabularQAgent

METHODS = ("epsilon_greedy", "softmax")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and episodes")
    parser.add_argument("--seeds", type=int, help="runs per method (default 5, quick 3)")
    parser.add_argument("--episodes", type=int, help="training episodes (default 10000)")
    parser.add_argument("--temperature", type=float, default=0.1, help="softmax temperature")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/exploration_comparison.png"), help="PNG to write"
    )
    args = parser.parse_args()
    args.quick = args.quick or os.environ.get("QLEARN_QUICK") == "1"
    args.seeds = args.seeds or (3 if args.quick else 5)
    args.episodes = args.episodes or (1_500 if args.quick else 10_000)
    args.eval_every = max(args.episodes // 10, 1)
    args.eval_episodes = 100 if args.quick else 500
    return args


def run(method: str, seed: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Train one agent; return its greedy success rates and its per-episode training returns."""
    config = TabularConfig(
        num_episodes=args.episodes,
        alpha=0.1,
        gamma=0.99,
        exploration=method,
        temperature=args.temperature,
        seed=seed,
    )
    agent = TabularQAgent("FrozenLake-v1", config)
    greedy, returns = [], []
    for chunk in range(args.episodes // args.eval_every):
        metrics = agent.learn(args.eval_every)  # each call continues the epsilon schedule
        returns.append(metrics.episode_returns)
        result = agent.evaluate(args.eval_episodes, seed=10_000 * (seed + 1) + chunk)
        greedy.append(result.success_rate)
    return np.array(greedy), np.concatenate(returns)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of every `window` consecutive values along the last axis of a 2-D array."""
    kernel = np.ones(window) / window
    return np.stack([np.convolve(row, kernel, mode="valid") for row in x])


def plot(results: dict[str, tuple[np.ndarray, np.ndarray]], args: argparse.Namespace) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    window = max(args.episodes // 20, 1)
    for method, (greedy, returns) in results.items():
        label = f"softmax (T = {args.temperature:g})" if method == "softmax" else method
        x = args.eval_every * np.arange(1, greedy.shape[1] + 1)
        color = left.plot(x, greedy.mean(0), marker="o", markersize=3, label=label)[0].get_color()
        left.fill_between(x, greedy.min(0), greedy.max(0), color=color, alpha=0.2)
        smooth = moving_average(returns, window)  # (seeds, episodes - window + 1)
        x = np.arange(window, returns.shape[1] + 1)
        right.plot(x, smooth.mean(0), color=color, label=label)
        right.fill_between(x, smooth.min(0), smooth.max(0), color=color, alpha=0.2)
    left.set_title(f"greedy policy ({args.eval_episodes} evaluation episodes)")
    right.set_title(f"while exploring (moving average of {window} episodes)")
    for ax in (left, right):
        ax.set_xlabel("training episodes")
        ax.set_ylabel("success rate")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle(
        f"FrozenLake-v1 (slippery 4x4), tabular Q-learning: mean and range over {args.seeds} seeds"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    return args.out


def main() -> None:
    args = parse_args()
    print(
        f"FrozenLake-v1: {args.seeds} seeds x {args.episodes} episodes per method; greedy "
        f"evaluation every {args.eval_every} episodes over {args.eval_episodes} episodes"
    )
    results = {}
    for method in METHODS:
        runs = [run(method, seed, args) for seed in range(args.seeds)]
        greedy = np.stack([g for g, _ in runs])  # (seeds, evaluations)
        returns = np.stack([r for _, r in runs])  # (seeds, episodes)
        results[method] = (greedy, returns)
        final = greedy[:, -1]
        print(
            f"{method:>14}: final greedy success rate {final.mean():.3f} "
            f"(per seed: {', '.join(f'{v:.2f}' for v in final)}); "
            f"success rate while training {np.mean(returns > 0):.3f}"
        )
    print(f"wrote {plot(results, args)}")


if __name__ == "__main__":
    main()
