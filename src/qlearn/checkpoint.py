"""Checkpoints that load without running code: safetensors for tensors, JSON for the rest.

A checkpoint is a directory:

    model.safetensors   both networks, Adam moments, torch RNG state
    replay.safetensors  the filled part of the replay buffer (optional; needed to resume)
    meta.json           format name and version, library version, config, env spaces, counters,
                        numpy RNG state, and the size and SHA-256 of each safetensors file
                        (`TrainingMeta` reads and writes what a training run puts there)

It is written into a hidden temporary directory, every file fsynced, then renamed into place, so a
crash leaves either the old checkpoint or the new one, never a half-written one. Loading reads
only JSON and safetensors (no pickle anywhere), checks sizes and hashes first, and raises
CheckpointError naming the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from qlearn import __version__
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import CheckpointError

FORMAT_NAME = "qlearn-checkpoint"
FORMAT_VERSION = 1
META = "meta.json"
MODEL = "model.safetensors"
REPLAY = "replay.safetensors"
CHECKPOINT_PREFIX = "step_"
BEST = "best"  # a run's best model so far, by periodic evaluation
FINAL = "final"  # a run's model at the end of its last `learn` call


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: readers see the old file or the whole new one.

    The bytes go to a hidden temporary file beside `path`, which replaces it (one rename) only
    when the block finishes without an error; otherwise the temporary is removed and `path`
    is untouched. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file (UTF-8) so that readers see the old content or the new, never a mix."""
    with atomic_output(path) as f:
        f.write(text.encode("utf-8"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses views and shared storage; clone what is not plain contiguous memory.
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def write_checkpoint(
    path: str | Path,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    replay: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any checkpoint already at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        files = {MODEL: tmp / MODEL}
        save_torch(_contiguous(tensors), str(files[MODEL]))
        if replay is not None:
            files[REPLAY] = tmp / REPLAY
            save_numpy({k: np.ascontiguousarray(v) for k, v in replay.items()}, str(files[REPLAY]))
        record = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **meta,
            "files": {
                name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for name, f in files.items()
            },
        }
        (tmp / META).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's meta.json (format, version, file sizes and hashes)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is not a qlearn checkpoint: expected a directory holding {META} and "
            f"{MODEL} (qlearn never loads pickled files such as .pt, .pth or .pkl)"
        )
    meta_path = path / META
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {META}; it is missing or foreign")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise CheckpointError(f"{str(meta_path)!r} is malformed JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{str(meta_path)!r} is not a qlearn checkpoint (format is "
            f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{str(meta_path)!r} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version}, newer than this qlearn "
            f"reads ({FORMAT_VERSION}); upgrade qlearn"
        )
    files = meta.get("files")
    if not isinstance(files, dict) or MODEL not in files:
        raise CheckpointError(f"{str(meta_path)!r} lists no {MODEL}")
    for name, info in files.items():
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise CheckpointError(
                f"{str(meta_path)!r} lists a file outside the checkpoint: {name!r}"
            )
        _verify_file(path / name, info)
    return meta


def _verify_file(file: Path, info: Any) -> None:
    if not file.is_file():
        raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
    try:
        size, digest = int(info["bytes"]), str(info["sha256"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CheckpointError(f"meta.json has a malformed entry for {file.name!r}") from None
    actual = file.stat().st_size
    if actual != size:
        raise CheckpointError(
            f"checkpoint file {str(file)!r} is truncated or altered: {actual} bytes, "
            f"expected {size}"
        )
    if _sha256(file) != digest:
        raise CheckpointError(f"checkpoint file {str(file)!r} is corrupt: SHA-256 mismatch")


def _load_safetensors(file: Path, loader: Any) -> dict[str, Any]:
    try:
        return dict(loader(str(file)))
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CheckpointError(
            f"{str(file)!r} is not a valid safetensors file ({type(exc).__name__}: {exc})"
        ) from None


def tensor_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor in a safetensors file, read from its header alone.

    Nothing else is loaded, so a loader can compare the shapes with what it expects before it
    allocates anything.
    """
    file = Path(file)
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CheckpointError(
            f"{str(file)!r} is not a valid safetensors file ({type(exc).__name__}: {exc})"
        ) from None


def read_tensors(
    path: str | Path, meta: Mapping[str, Any], *, with_replay: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray] | None]:
    """Load (tensors, replay arrays or None) of a checkpoint whose meta `read_meta` checked."""
    path = Path(path)
    tensors = _load_safetensors(path / MODEL, load_torch)
    replay = None
    if with_replay and REPLAY in meta["files"]:
        replay = _load_safetensors(path / REPLAY, load_numpy)
    return tensors, replay


def read_checkpoint(
    path: str | Path, *, with_replay: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray] | None]:
    """Load (meta, tensors, replay arrays or None) from a checkpoint directory."""
    meta = read_meta(path)
    return meta, *read_tensors(path, meta, with_replay=with_replay)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Periodic checkpoint directories of a run, oldest first (hidden temporaries excluded)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdecimal()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run that passes every check, or None."""
    for path in reversed(checkpoint_dirs(run_dir)):
        try:
            read_meta(path)
        except CheckpointError:
            continue
        return path
    return None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints."""
    for path in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        # Hide it first (one atomic rename), so a crash mid-delete leaves no broken checkpoint.
        hidden = path.with_name(f".{path.name}.del")
        os.rename(path, hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def remove_temporaries(run_dir: str | Path) -> None:
    """Delete what an interrupted write or delete left behind (hidden `.*.tmp`, `.*.del`,
    `.*.old`) in a run dir and its checkpoints/.

    A crash between the two renames that replace a checkpoint (`best`, `final`) leaves only
    the hidden old copy, which is complete: it is renamed back into place.
    """
    run_dir = Path(run_dir)
    for root in (run_dir, run_dir / "checkpoints"):
        if not root.is_dir():
            continue
        for path in root.iterdir():
            name = path.name
            if not (name.startswith(".") and name.endswith((".tmp", ".del", ".old"))):
                continue
            original = path.with_name(name[1 : -len(".old")])
            if name.endswith(".old") and path.is_dir() and not original.exists():
                os.rename(path, original)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def resolve_model_path(path: Path) -> Path:
    """A checkpoint directory as given, or the best (else final, else newest) one of a run."""
    if (path / META).exists() or not path.is_dir():
        return path
    for name in (BEST, FINAL):
        if (path / name / META).exists():
            return path / name
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise CheckpointError(f"{str(path)!r} holds no qlearn checkpoint (no {META})")


# ---------------------------------------------------------------------- training metadata
@dataclasses.dataclass
class Counters:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    episodes: int = 0
    target_step: int = 0
    """The step the latest `learn()` call trains to; a resumed run continues to it."""
    best_eval: float = -math.inf
    num_evals: int = 0
    wall_time: float = 0.0


def counters_from_dict(data: Any) -> Counters:
    """Counters from a checkpoint's JSON, refusing unknown or non-numeric entries.

    Raises TypeError or ValueError naming the entry; `TrainingMeta.from_dict` turns them into
    CheckpointError.
    """
    if not isinstance(data, dict):
        raise TypeError(f"counters is {type(data).__name__}, expected an object")
    if "total_steps" in data and "target_step" not in data:
        # Older checkpoints name the target step `total_steps`.
        data = {("target_step" if k == "total_steps" else k): v for k, v in data.items()}
    fields = {f.name: type(f.default) for f in dataclasses.fields(Counters)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"counters has unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = fields[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"counters.{name} = {value!r} is not a number")
        values[name] = kind(value) if kind is float else int(value)
        if kind is int and (values[name] != value or values[name] < 0):
            raise ValueError(f"counters.{name} = {value!r} is not a count")
    return Counters(**values)


@dataclasses.dataclass
class TrainingMeta:
    """What a training run writes into a checkpoint's meta.json beside its tensors."""

    config: DQNConfig
    env_spec: EnvSpec
    env_id: str | None
    """The env the run trained on, or None for an env instance without a registered id."""
    env_kwargs: dict[str, Any]
    counters: Counters
    learner: dict[str, Any]
    """The learner's JSON-ready state: `num_updates` and the numpy RNG state (`numpy_rng`).
    Saved under the key `agent`, as checkpoints always have; checked where it is restored."""

    def to_dict(self) -> dict[str, Any]:
        """The meta.json entries (`write_checkpoint` adds the format and the file list)."""
        return {
            "qlearn_version": __version__,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "env_spec": self.env_spec.to_dict(),
            "config": self.config.to_dict(),
            "counters": dataclasses.asdict(self.counters),
            "agent": self.learner,
        }

    @classmethod
    def from_dict(
        cls, meta: Mapping[str, Any], path: str | Path, *, need_env_id: bool = True
    ) -> TrainingMeta:
        """Parse what `read_meta` returned for the checkpoint at `path`.

        Args:
            meta: the checked meta.json.
            path: the checkpoint, for error messages.
            need_env_id: whether the env id must be there (False when the caller chose the env).

        Raises:
            ConfigError: the config is invalid (the message names the setting).
            CheckpointError: any other entry is missing or malformed.
        """
        try:
            config = DQNConfig.from_dict(meta["config"], source=f"checkpoint {str(path)!r}")
            env_spec = EnvSpec.from_dict(meta["env_spec"])
            env_id = meta["env_id"] if need_env_id else meta.get("env_id")
            env_kwargs = meta.get("env_kwargs") or {}
            if not isinstance(env_kwargs, dict):
                raise TypeError(f"env_kwargs is {type(env_kwargs).__name__}, expected an object")
            counters = counters_from_dict(meta["counters"])
            learner = meta["agent"]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has malformed meta.json: {exc}"
            ) from None
        return cls(config, env_spec, env_id, env_kwargs, counters, learner)
