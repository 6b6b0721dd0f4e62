"""Value iteration on the two-state MDP: 1 -> 2 pays +1, 2 -> 1 pays +2, gamma = 0.9.

Starting from V = 0, after n synchronous sweeps V(1) is the discounted sum of the first n
rewards +1, +2, +1, ...; the limit solves V1 = 1 + 0.9 V2, V2 = 2 + 0.9 V1: V1 = 2.8 / 0.19.

    python examples/02_value_iteration_two_state.py [--quick]
"""

import argparse

from qlearn.planning import TabularMDP, value_iteration

GAMMA = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(already quick)")
    parser.parse_args()

    # {state: {action: [(probability, next_state, reward)]}}; states 0 and 1 are "1" and "2"
    mdp = TabularMDP.from_spec({0: {0: [(1.0, 1, 1.0)]}, 1: {0: [(1.0, 0, 2.0)]}})
    result = value_iteration(mdp, GAMMA, tolerance=1e-12)

    print(" sweep       V(1)       V(2)   first-n rewards, discounted")
    for n in (1, 2, 3, 4, 5, 74, 102):
        by_hand = sum(GAMMA**k * (1 if k % 2 == 0 else 2) for k in range(n))
        v1, v2 = result.history[n]
        print(f"{n:6d} {v1:10.7f} {v2:10.7f}   {by_hand:10.7f}")
    print(
        f"  last {result.values[0]:10.7f} {result.values[1]:10.7f}   ({result.num_sweeps} sweeps)"
    )
    print(f" limit {2.8 / 0.19:10.7f} {2.9 / 0.19:10.7f}   V1 = 2.8 / 0.19, V2 = 2.9 / 0.19")


if __name__ == "__main__":
    main()
