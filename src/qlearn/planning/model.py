"""Model estimation: count transitions while exploring, turn the counts into a `TabularMDP`.

`estimate_and_plan` puts the parts together: explore at random, then alternate planning on the
estimate with epsilon-greedy exploration in its plan, so the states a good policy visits (near
FrozenLake's goal, which random walks seldom reach) get the samples that decide its actions.

The estimate is the maximum-likelihood one: P(s' | s, a) = N(s, a, s') / N(s, a) and R(s, a) the
mean reward seen after (s, a). A pair never tried gets a reward-free self-loop ("nothing known
happens"), so planning neither trusts nor chases it; `TransitionCounts.visited` says which.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qlearn.config import check_range
from qlearn.envs import check_discrete_env
from qlearn.exploration import epsilon_greedy
from qlearn.planning.dp import ValueIterationResult, value_iteration
from qlearn.planning.mdp import TabularMDP


def counts_to_probabilities(counts: np.ndarray) -> np.ndarray:
    """Normalise counts along the last axis; rows with no counts stay all zero.

    For example counts [0, 4, 6] give [0.0, 0.4, 0.6].
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


class TransitionCounts:
    """Tallies of (s, a) -> s' transitions, rewards and terminations seen in an env.

    Attributes:
        counts: (S, A, S) int64, times s' followed (s, a).
        reward_sums: (S, A) float64, the sum of rewards seen after (s, a).
        terminal: (S,) bool, states that some terminated transition entered.
    """

    def __init__(self, num_states: int, num_actions: int) -> None:
        check_range("num_states", num_states, 1)
        check_range("num_actions", num_actions, 1)
        self.counts = np.zeros((num_states, num_actions, num_states), dtype=np.int64)
        self.reward_sums = np.zeros((num_states, num_actions))
        self.terminal = np.zeros(num_states, dtype=bool)

    @property
    def visits(self) -> np.ndarray:
        """(S, A) times each (s, a) was tried."""
        return self.counts.sum(axis=2)

    @property
    def visited(self) -> np.ndarray:
        """(S, A) bool, pairs tried at least once."""
        return self.visits > 0

    def record(
        self, state: int, action: int, reward: float, next_state: int, terminated: bool
    ) -> None:
        """Add one transition. A truncated one is recorded like any other: it was a real step."""
        self.counts[state, action, next_state] += 1
        self.reward_sums[state, action] += reward
        if terminated:
            self.terminal[next_state] = True

    def probabilities(self) -> np.ndarray:
        """(S, A, S) estimated P; rows of unvisited pairs are all zero."""
        return counts_to_probabilities(self.counts)

    def to_mdp(self) -> TabularMDP:
        """The maximum-likelihood `TabularMDP`; unvisited pairs become reward-free self-loops."""
        visits = self.visits
        p = self.probabilities()
        r = np.divide(
            self.reward_sums, visits, out=np.zeros_like(self.reward_sums), where=visits > 0
        )
        unvisited_s, unvisited_a = np.nonzero(visits == 0)
        p[unvisited_s, unvisited_a, unvisited_s] = 1.0
        return TabularMDP.from_arrays(p, r, self.terminal)


def collect_transitions(
    env: Any,
    num_episodes: int,
    *,
    seed: int = 0,
    q_values: np.ndarray | None = None,
    epsilon: float = 1.0,
    counts: TransitionCounts | None = None,
) -> TransitionCounts:
    """Explore `env` for `num_episodes` episodes and count what happens.

    Actions are uniform at random by default; given `q_values`, epsilon-greedy in them.

    Args:
        env: a Gymnasium env with Discrete observation and action spaces.
        num_episodes: >= 1.
        seed: seeds the env's first reset and the action RNG.
        q_values: (S, A) to act epsilon-greedily in, or None for uniform actions.
        epsilon: in [0, 1], the chance of a uniform action when `q_values` is given.
        counts: tallies to add to; new ones by default.

    Returns:
        The tallies.

    Raises:
        EnvError: the env's spaces are not Discrete.
    """
    num_states, num_actions = check_discrete_env(env)
    check_range("num_episodes", num_episodes, 1)
    check_range("epsilon", epsilon, 0, 1)
    if counts is None:
        counts = TransitionCounts(num_states, num_actions)
    rng = np.random.default_rng(seed)
    q = np.zeros((num_states, num_actions)) if q_values is None else np.asarray(q_values)
    eps = 1.0 if q_values is None else epsilon
    for episode in range(num_episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            action = epsilon_greedy(q[state], eps, rng)
            next_state, reward, terminated, truncated, _ = env.step(action)
            counts.record(state, action, float(reward), next_state, terminated)
            state = next_state
            done = terminated or truncated
    return counts


@dataclasses.dataclass(frozen=True, eq=False)
class ModelEstimate:
    """What `estimate_and_plan` learned.

    Attributes:
        counts: every transition seen.
        mdp: the maximum-likelihood model built from `counts`.
        plan: value iteration on `mdp`; `plan.policy` is the policy to deploy.
    """

    counts: TransitionCounts
    mdp: TabularMDP
    plan: ValueIterationResult


def estimate_and_plan(
    env: Any,
    gamma: float,
    *,
    num_random_episodes: int = 1_000,
    num_rounds: int = 8,
    episodes_per_round: int = 250,
    epsilon: float = 0.3,
    seed: int = 0,
) -> ModelEstimate:
    """Learn a model by counting, then plan on it (certainty-equivalence model-based RL).

    First `num_random_episodes` with uniform actions; then `num_rounds` times: plan with value
    iteration on the current estimate and explore `episodes_per_round` episodes epsilon-greedily
    in the plan's Q-values.

    Args:
        env: a Gymnasium env with Discrete observation and action spaces.
        gamma: discount in [0, 1] of the planner.
        num_random_episodes: >= 1.
        num_rounds: >= 0 rounds of plan-then-explore.
        episodes_per_round: >= 1.
        epsilon: in [0, 1], the chance of a uniform action in the rounds.
        seed: seeds every episode and action choice.
    """
    check_range("num_rounds", num_rounds, 0)
    # One independent seed per collection call, all from `seed`.
    seeds = np.random.SeedSequence(seed).generate_state(num_rounds + 1).tolist()
    counts = collect_transitions(env, num_random_episodes, seed=seeds[0])
    for round_seed in seeds[1:]:
        plan = value_iteration(counts.to_mdp(), gamma)
        collect_transitions(
            env,
            episodes_per_round,
            seed=round_seed,
            q_values=plan.q_values,
            epsilon=epsilon,
            counts=counts,
        )
    mdp = counts.to_mdp()
    return ModelEstimate(counts=counts, mdp=mdp, plan=value_iteration(mdp, gamma))
