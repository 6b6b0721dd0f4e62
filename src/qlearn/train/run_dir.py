"""A single run's directory: preparing it, the files that describe the run, and finding the
checkpoint to resume from. `DQN`, `MultiSeedDQN` and the Ape-X driver share these.

RUN_DIR/
  config.toml        the resolved config (RUN_CONFIG)
  run.json           env id, env kwargs, qlearn version, env spec (RUN_INFO)
  checkpoints/       the newest KEEP_CHECKPOINTS periodic checkpoints
  best/, final/      the best model by periodic evaluation, and the last one
  train.csv, evals.csv, episodes.csv  logs (`qlearn.monitor`)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from qlearn import __version__, checkpoint
from qlearn.checkpoint import BEST, Counters
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import CheckpointError, ConfigError

RUN_CONFIG = "config.toml"
RUN_INFO = "run.json"
KEEP_CHECKPOINTS = 2  # periodic checkpoints a run keeps (a crash mid-write leaves the other)


def checkpoint_to_resume(run_dir: Path) -> Path:
    """The newest complete checkpoint of `run_dir`, after putting back a best/ or final/ that a
    crash left moved aside (so the best score is read); CheckpointError says why there is none.
    """
    if run_dir.is_dir():
        checkpoint.remove_temporaries(run_dir)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is None:
        raise CheckpointError(_no_checkpoint_message(run_dir))
    return latest


def keep_best_eval(counters: Counters, run_dir: Path) -> None:
    """Raise `counters.best_eval` to the score of the run's best model on disk (it may be newer
    than the checkpoint a run resumes from), so that a worse model never replaces it."""
    with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
        best = float(checkpoint.read_meta(run_dir / BEST)["counters"]["best_eval"])
        counters.best_eval = max(counters.best_eval, best)


def open_run_dir(run_dir: Path, *, fresh: bool) -> None:
    """Create `run_dir` and check it is writable; refuse a fresh run (`fresh`) where another
    run left checkpoints; delete what an interrupted write left behind."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"run directory {str(run_dir)!r} is not writable ({exc.strerror}); "
            "choose another with --run-dir"
        ) from None
    if fresh and checkpoint.checkpoint_dirs(run_dir):
        # A fresh run here would mix with the old one: pruning would delete the new
        # checkpoints (lower step numbers) and --resume would pick the old run's.
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds checkpoints of another run; "
            f"continue it with --resume {run_dir}, or choose another --run-dir"
        )
    checkpoint.remove_temporaries(run_dir)


def write_run_files(
    run_dir: Path,
    config: DQNConfig,
    env_id: str | None,
    env_kwargs: dict[str, Any],
    spec: EnvSpec,
) -> None:
    """A run's resolved config (RUN_CONFIG) and what it trains on (RUN_INFO)."""
    checkpoint.atomic_write_text(run_dir / RUN_CONFIG, config.to_toml())
    info = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "qlearn": __version__,
        "spec": spec.to_dict(),
    }
    checkpoint.atomic_write_text(run_dir / RUN_INFO, json.dumps(info, indent=2))


def _no_checkpoint_message(run_dir: Path) -> str:
    """Why `run_dir` has no checkpoint to resume from, as its config.toml explains it."""
    start = f"run {str(run_dir)!r} has no complete checkpoint to resume from"
    if not run_dir.is_dir():
        return f"{start}: no such directory"
    found = len(checkpoint.checkpoint_dirs(run_dir))
    if found:
        return f"{start}: its {found} checkpoint(s) fail the size and SHA-256 checks"
    try:
        config = DQNConfig.from_toml(run_dir / RUN_CONFIG)
    except ConfigError:
        return f"{start}: it holds no readable {RUN_CONFIG}, so it is not a qlearn run directory"
    if not (config.checkpoint_interval or config.checkpoint_minutes):
        return (
            f"{start}: its config disables periodic checkpoints (checkpoint_interval = 0 and "
            "checkpoint_minutes = 0); train it again without --resume"
        )
    return (
        f"{start}: it stopped before its first periodic checkpoint (due after "
        f"{config.checkpoint_interval} steps or {config.checkpoint_minutes:g} minutes of "
        "training); train it again without --resume"
    )
