"""Agents: the tabular Q-learner and the DQN learner.

Names are re-exported as `X as X` (PEP 484's explicit re-export), one per line, so another
agent's exports are appended as lines without a shared `__all__` to edit.
"""

from qlearn.agents.dqn import DQNLearner as DQNLearner
from qlearn.agents.tabular import EpisodeMetrics as EpisodeMetrics
from qlearn.agents.tabular import TabularQAgent as TabularQAgent
from qlearn.agents.tabular import TrainingMetrics as TrainingMetrics
from qlearn.agents.tabular import evaluate_policy as evaluate_policy
from qlearn.agents.tabular import make_tabular_env as make_tabular_env
from qlearn.agents.tabular import q_update as q_update
from qlearn.evaluation import EvalResult as EvalResult
