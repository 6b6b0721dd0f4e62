"""Agents: the tabular Q-learner (and, appended below, the DQN family)."""

from qlearn.agents.tabular import (
    EpisodeMetrics,
    EvalResult,
    TabularQAgent,
    TrainingMetrics,
    evaluate_policy,
    make_tabular_env,
    q_update,
)

__all__ = [
    "EpisodeMetrics",
    "EvalResult",
    "TabularQAgent",
    "TrainingMetrics",
    "evaluate_policy",
    "make_tabular_env",
    "q_update",
]
