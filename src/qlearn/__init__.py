"""qlearn: Q-learning in all its forms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qlearn")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
