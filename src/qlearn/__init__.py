"""qlearn: Q-learning in all its forms.

The names most users need are importable from here:

    from qlearn import DQN, DQNConfig
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qlearn")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from qlearn.config import DQNConfig, TabularConfig
from qlearn.errors import QlearnError


def __getattr__(name: str) -> object:
    # DQN pulls in torch and gymnasium; import it on first use so `import qlearn` stays light.
    if name == "DQN":
        from qlearn.train import DQN

        return DQN
    if name == "MultiSeedDQN":
        from qlearn.train.multi_seed import MultiSeedDQN

        return MultiSeedDQN
    raise AttributeError(f"module 'qlearn' has no attribute {name!r}")


__all__ = ["DQN", "DQNConfig", "MultiSeedDQN", "QlearnError", "TabularConfig", "__version__"]
