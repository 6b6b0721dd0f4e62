"""DQN on CartPole-v1 with the founding tutorials' network and schedule.

A main Q-network with two hidden layers of 64 units picks the actions; a target network, a copy
of it refreshed every 100 env steps, supplies the TD targets; every 4 env steps the main network
takes one Adam step on a mini-batch drawn from the replay buffer. The config below states each
of these choices, so nothing comes from a default you cannot see.

    python examples/05_dqn_cartpole.py           # full run: 50,000 steps, one to two minutes
    python examples/05_dqn_cartpole.py --quick   # smoke run of a few seconds (or QLEARN_QUICK=1)

CartPole-v1 ends an episode after 500 steps, so 500 is the best possible return. Copying the
target this often makes the greedy return swing from one evaluation to the next, so the run
directory keeps the best-evaluated network (`best/`) beside the last one, and the script scores
both. The tuned `cartpole` preset (`qlearn train CartPole-v1 --preset cartpole`) copies the
target every 500 steps and uses Double DQN.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qlearn import DQN, DQNConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/05_dqn_cartpole"))
    args = parser.parse_args()
    args.quick = args.quick or os.environ.get("QLEARN_QUICK") == "1"
    return args


def main() -> None:
    args = parse_args()
    total_steps = 6_000 if args.quick else 50_000
    config = DQNConfig(
        total_steps=total_steps,
        hidden_sizes=(64, 64),  # the Q-network: 4 inputs -> 64 -> 64 -> 2 Q-values
        learning_rate=5e-4,
        gamma=0.99,
        # Squared TD error. With the target copied this often, the Huber loss (the default)
        # let the Q-values grow far past any possible return in our CartPole runs.
        loss="mse",
        buffer_size=50_000,
        batch_size=64,
        learning_starts=1_000,
        train_interval=4,  # one gradient step every 4 env steps
        target_update_interval=100,  # copy the main network into the target every 100 steps
        tau=1.0,  # a hard copy, not Polyak averaging
        exploration="epsilon_greedy",
        epsilon_start=1.0,
        epsilon_end=0.02,
        exploration_fraction=0.2,  # epsilon falls linearly over the first 20% of the steps
        eval_interval=total_steps // 5,
        eval_episodes=10,
        seed=args.seed,
    )
    agent = DQN("CartPole-v1", config, run_dir=args.run_dir)

    learner = agent.learner
    print("Main Q-network (the target network is a separate copy with the same shape):")
    print(learner.q_net)
    num_params = sum(p.numel() for p in learner.q_net.parameters())
    print(f"{num_params} parameters in each network")
    print()

    def report(agent: DQN, metrics: dict[str, float]) -> None:
        print(
            f"step {int(metrics['step']):>6}: greedy mean return {metrics['mean_return']:6.1f}"
            f" over {int(metrics['episodes'])} episodes"
        )

    agent.learn(callback=report)
    print()
    print(
        f"trained {agent.counters.step} steps ({learner.num_updates} gradient steps, "
        f"{agent.counters.step // config.target_update_interval} target copies) "
        f"in {agent.counters.wall_time:.1f}s"
    )
    # The same 20 held-out episodes for the last and the best network: evaluate()'s default
    # seed, which no periodic evaluation used (those chose the best network).
    best = DQN.load(args.run_dir)  # a run dir loads its best/ checkpoint
    for name, candidate in (("last network", agent), ("best checkpoint", best)):
        result = candidate.evaluate(num_episodes=20)
        print(
            f"final greedy evaluation over {len(result.returns)} episodes, {name}: mean return "
            f"{result.mean_return:.1f} +/- {result.std_return:.1f} "
            f"(min {result.returns.min():.0f}, max {result.returns.max():.0f})"
        )
    print(f"run dir: {args.run_dir}")


if __name__ == "__main__":
    main()
