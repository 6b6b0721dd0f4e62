"""Policy iteration and value iteration on FrozenLake's known model, and a value heatmap.

python examples/03_frozenlake_planning.py [--quick] [--plot frozenlake_values.png]
"""

import argparse

import gymnasium as gym
import numpy as np

from qlearn.agents import evaluate_policy
from qlearn.planning import TabularMDP, policy_iteration, policy_values, value_iteration
from qlearn.plots import plot_value_grid

GAMMA = 0.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer evaluation episodes")
    parser.add_argument("--plot", default="frozenlake_values.png", help="where the PNG goes")
    args = parser.parse_args()

    env = gym.make("FrozenLake-v1")  # slippery: each move goes sideways 2 times in 3
    mdp = TabularMDP.from_env(env)  # P[s, a, s'], R[s, a] and the terminal states
    print(f"FrozenLake: {mdp.num_states} states, terminal {np.flatnonzero(mdp.terminal)}")

    vi = value_iteration(mdp, GAMMA)
    print(f"value iteration:  {vi.num_sweeps} sweeps, V(start) = {vi.values[0]:.6f}")
    pi = policy_iteration(mdp, GAMMA)
    print(f"policy iteration: {pi.num_iterations} policies, V(start) = {pi.values[0]:.6f}")
    exact = policy_values(mdp, pi.policy, GAMMA)  # solve (I - gamma P_pi) V = R_pi
    print(f"linear solve:     V(start) = {exact[0]:.6f}")
    print(
        f"largest difference, value vs policy iteration: {np.abs(vi.values - pi.values).max():.1e}"
    )

    episodes = 200 if args.quick else 1_000
    result = evaluate_policy(env, pi.policy, num_episodes=episodes, seed=0)
    print(f"the plan reaches the goal in {result.success_rate:.1%} of {episodes} episodes")

    desc = env.unwrapped.desc
    plot_value_grid(pi.values, desc, args.plot, policy=pi.policy, title="FrozenLake: V and policy")
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
