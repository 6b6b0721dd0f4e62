"""Training: the DQN user API with its env loop, evaluation, logging and checkpoints."""

from qlearn.train.dqn import DQN, TrainingInterrupted
from qlearn.train.evaluation import EvalResult, evaluate_policy

__all__ = ["DQN", "EvalResult", "TrainingInterrupted", "evaluate_policy"]
