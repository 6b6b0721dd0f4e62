"""Tuned hyperparameters, one TOML file per preset, loaded as DQNConfig."""

from __future__ import annotations

import difflib
import tomllib
from importlib import resources

from qlearn.config import DQNConfig
from qlearn.errors import ConfigError


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    files = resources.files(__package__).iterdir()
    return sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml"))


def preset_text(name: str) -> str:
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (allowed: {', '.join(names)})")
    return (resources.files(__package__) / f"{name}.toml").read_text(encoding="utf-8")


def load_preset(name: str) -> DQNConfig:
    """The DQNConfig of a shipped preset."""
    data = tomllib.loads(preset_text(name))
    return DQNConfig.from_dict(data, source=f"preset {name!r}")
