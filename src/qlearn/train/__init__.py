"""Training: the DQN user API with its env loop, evaluation, logging and checkpoints."""

from qlearn.evaluation import EvalResult, run_episodes
from qlearn.train.dqn import DQN, TrainingInterrupted

__all__ = ["DQN", "EvalResult", "TrainingInterrupted", "run_episodes"]
