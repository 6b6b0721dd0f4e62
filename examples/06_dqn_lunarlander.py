"""DQN on LunarLander-v3 with the founding tutorials' `QNetwork(8, 4)` and Adam at lr 1e-4.

The tutorials build their network and optimizer by hand:

    q_network = QNetwork(8, 4)
    optimizer = optim.Adam(q_network.parameters(), lr=0.0001)

qlearn ships that network as `qlearn.networks.QNetwork`. `DQN` builds its own main and target
networks from the config, so `hidden_sizes=(64, 64)` and `learning_rate=1e-4` give the agent the
very same architecture and step size; the script checks this before it trains.

    python examples/06_dqn_lunarlander.py           # full run: 500,000 steps (several minutes)
    python examples/06_dqn_lunarlander.py --quick   # smoke run of a few seconds (or QLEARN_QUICK=1)

LunarLander-v3 needs Box2D: `pip install "qlearn[box2d]"` (the dev extra includes it). A return
of 200 or more counts as solved.
"""

from __future__ import annotations

import argparse
import os

import torch

from qlearn import DQN, DQNConfig
from qlearn.networks import QNetwork


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.quick = args.quick or os.environ.get("QLEARN_QUICK") == "1"
    return args


def main() -> None:
    args = parse_args()

    # The tutorials' network and optimizer, exactly as they write them.
    q = QNetwork(8, 4)  # 8 observation values -> 64 -> 64 -> 4 Q-values, ReLU between
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-4)

    total_steps = 8_000 if args.quick else 500_000
    config = DQNConfig(
        total_steps=total_steps,
        hidden_sizes=(64, 64),
        learning_rate=1e-4,
        train_interval=4,  # one gradient step every 4 env steps
        target_update_interval=100,  # hard copy into the target network every 100 steps
        batch_size=64,
        buffer_size=100_000,
        learning_starts=1_000,
        gamma=0.99,
        epsilon_end=0.05,
        exploration_fraction=0.1,
        eval_interval=total_steps // (4 if args.quick else 20),
        eval_episodes=5 if args.quick else 10,
        seed=args.seed,
    )
    agent = DQN("LunarLander-v3", config)

    # Same layers, same parameter shapes, same learning rate as the hand-built pair.
    learner = agent.agent
    same_layers = repr(learner.q_net) == repr(q)
    same_shapes = [p.shape for p in learner.q_net.parameters()] == [p.shape for p in q.parameters()]
    same_lr = learner.optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert same_layers and same_shapes and same_lr, (
        "the agent's network differs from QNetwork(8, 4)"
    )
    print("QNetwork(8, 4), as the tutorials build it:")
    print(q)
    print(
        f"agent's main network matches it: layers {same_layers}, parameter shapes {same_shapes}, "
        f"Adam lr {same_lr} ({learner.optimizer.param_groups[0]['lr']:g})"
    )
    print()

    def report(agent: DQN, metrics: dict[str, float]) -> None:
        print(
            f"step {int(metrics['step']):>7}: greedy mean return {metrics['mean_return']:7.1f}"
            f" over {int(metrics['episodes'])} episodes",
            flush=True,
        )

    agent.learn(callback=report)
    result = agent.evaluate(num_episodes=5 if args.quick else 20)
    solved = sum(r >= 200 for r in result.returns)
    print()
    print(f"trained {agent.counters.step} steps in {agent.counters.wall_time:.0f}s")
    print(
        f"final greedy evaluation over {len(result.returns)} episodes: mean return "
        f"{result.mean_return:.1f} +/- {result.std_return:.1f}; {solved} of {len(result.returns)} "
        "episodes scored 200 or more"
    )


if __name__ == "__main__":
    main()
