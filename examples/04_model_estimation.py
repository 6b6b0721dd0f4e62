"""Learn FrozenLake's model from counted transitions, plan on it, compare with the true model.

An explorer acts (at random first, then epsilon-greedily in its current plan), counts
(s, a) -> s' and the rewards seen; counts {1: 4, 2: 6} become probabilities 0.4 and 0.6.

    python examples/04_model_estimation.py [--quick]
"""

import argparse

import numpy as np

from qlearn.agents import evaluate_policy, make_tabular_env
from qlearn.planning import TabularMDP, estimate_and_plan, value_iteration

GAMMA = 0.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer evaluation episodes")
    args = parser.parse_args()

    env = make_tabular_env("FrozenLake-v1")
    # 1,000 random episodes, then 8 rounds of: plan, explore 250 episodes epsilon-greedily
    estimate = estimate_and_plan(env, GAMMA, seed=0)
    counts = estimate.counts
    print(f"explored {counts.visits.sum()} steps")
    print(f"counts after (state 0, left): {counts.counts[0, 0, [0, 4]]} to states 0 and 4")
    print(f"estimated P:                  {estimate.mdp.P[0, 0, [0, 4]].round(3)}")

    true = TabularMDP.from_env(env)
    print(f"true P:                       {true.P[0, 0, [0, 4]].round(3)}")
    often = counts.visits >= 100
    error = np.abs(estimate.mdp.P - true.P)[often].max()
    print(f"largest error over the {often.sum()} pairs tried 100+ times: {error:.3f}")
    print(f"pairs never tried: {(~counts.visited[~true.terminal]).sum()}")

    true_plan = value_iteration(true, GAMMA)
    episodes = 300 if args.quick else 1_000
    ours = evaluate_policy(env, estimate.plan.policy, num_episodes=episodes, seed=1)
    best = evaluate_policy(env, true_plan.policy, num_episodes=episodes, seed=2)
    print(f"success, plan on the estimate: {ours.success_rate:.3f}")
    print(f"success, plan on the truth:    {best.success_rate:.3f}")
    print(f"gap: {abs(ours.success_rate - best.success_rate):.3f} over {episodes} episodes each")


if __name__ == "__main__":
    main()
