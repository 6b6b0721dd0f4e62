"""Planning on known or estimated finite MDPs (numpy only)."""

from qlearn.planning.dp import (
    PolicyIterationResult,
    ValueIterationResult,
    greedy_policy,
    policy_iteration,
    policy_values,
    q_from_values,
    value_iteration,
)
from qlearn.planning.mdp import MDPSpec, TabularMDP
from qlearn.planning.model import (
    ModelEstimate,
    TransitionCounts,
    collect_transitions,
    counts_to_probabilities,
    estimate_and_plan,
)

__all__ = [
    "MDPSpec",
    "ModelEstimate",
    "PolicyIterationResult",
    "TabularMDP",
    "TransitionCounts",
    "ValueIterationResult",
    "collect_transitions",
    "counts_to_probabilities",
    "estimate_and_plan",
    "greedy_policy",
    "policy_iteration",
    "policy_values",
    "q_from_values",
    "value_iteration",
]
