"""Q-learning on FrozenLake: the Q-table before (all zeros) and after training.

python examples/01_qtable_frozenlake.py           # 5,000 episodes on the slippery lake
python examples/01_qtable_frozenlake.py --quick   # a few seconds
"""

import argparse

import numpy as np

from qlearn.agents import TabularQAgent
from qlearn.config import TabularConfig

ARROWS = "<v>^"  # FrozenLake's actions: 0 left, 1 down, 2 right, 3 up


def show(q_table: np.ndarray) -> None:
    print("state   left   down  right     up")
    for state, row in enumerate(q_table):
        print(f"{state:5d} " + " ".join(f"{q:6.3f}" for q in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer episodes")
    args = parser.parse_args()

    episodes = 2_500 if args.quick else 5_000
    config = TabularConfig(num_episodes=episodes, alpha=0.1, gamma=0.99, seed=0)
    agent = TabularQAgent("FrozenLake-v1", config)  # the 4x4 slippery lake

    print("Q-table before training:")
    show(agent.q_table)

    metrics = agent.learn()
    print(f"\nQ-table after {episodes} episodes ({metrics.episode_lengths.sum()} steps):")
    show(agent.q_table)

    policy = agent.greedy_policy().reshape(4, 4)
    print("\ngreedy policy (holes and goal have no action that matters):")
    for row in policy:
        print("  " + " ".join(ARROWS[a] for a in row))

    result = agent.evaluate(num_episodes=200 if args.quick else 1_000, seed=1)
    print(
        f"\ngreedy evaluation: success rate {result.success_rate:.3f} over "
        f"{len(result.returns)} episodes (the best policy scores about 0.74)"
    )


if __name__ == "__main__":
    main()
