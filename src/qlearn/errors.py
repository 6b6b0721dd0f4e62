"""The errors qlearn raises. The CLI turns each into one line and a non-zero exit."""


class QlearnError(Exception):
    """Base class of every error qlearn raises on purpose."""


class ConfigError(QlearnError, ValueError):
    """A configuration value, key or file is invalid."""


class EnvError(QlearnError, ValueError):
    """An environment id is unknown, or its spaces are not supported."""


class CheckpointError(QlearnError):
    """A checkpoint is missing, damaged, foreign, or does not match the environment."""


class TrainingError(QlearnError, RuntimeError):
    """Training cannot go on: a non-finite loss, a NaN observation, no memory for the buffer."""


class ExportError(QlearnError, RuntimeError):
    """An exported model failed its check against the original, so nothing was written."""


class ServeError(QlearnError, RuntimeError):
    """A policy server could not start, or stopped answering."""
