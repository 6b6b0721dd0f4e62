"""The layout of a multi-seed run dir, readable without importing torch (for `plot`, `compare`).

PARENT/
  multi_seed.json     env id, seeds, reward threshold, env spaces
  config.toml         the shared config (its seed is the first seed's)
  checkpoints/        periodic checkpoints, each holding every seed
  aggregate.json      each seed's best evaluation and when it solved the task
  seed_<seed>/        one ordinary run dir per seed (config, CSV logs, best/, final/)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qlearn.errors import CheckpointError

MULTI_SEED_INFO = "multi_seed.json"
AGGREGATE = "aggregate.json"


def seed_dir_name(seed: int) -> str:
    """The run dir of seed `seed` inside a multi-seed run dir."""
    return f"seed_{seed}"


def is_multi_seed_run(path: str | Path) -> bool:
    """Whether `path` is the parent run dir of a multi-seed run."""
    return (Path(path) / MULTI_SEED_INFO).is_file()


def read_multi_seed_info(path: str | Path) -> dict[str, Any]:
    """The parent's `multi_seed.json` (env_id, seeds, reward_threshold, ...); CheckpointError
    when it is missing or malformed."""
    file = Path(path) / MULTI_SEED_INFO
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        info["seeds"] = [int(s) for s in info["seeds"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable multi-seed run dir ({MULTI_SEED_INFO}: {exc})"
        ) from None
    return info
