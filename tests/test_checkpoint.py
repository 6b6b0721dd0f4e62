"""Checkpoint files: atomic writes, size and hash checks, clear errors, and no code ever run.

Each damaged or hostile checkpoint must raise CheckpointError with a message naming the problem;
nothing here may unpickle, so a pickle payload that would create a marker file never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qlearn import checkpoint
from qlearn.config import DQNConfig
from qlearn.envs import EnvSpec
from qlearn.errors import CheckpointError
from qlearn.train import DQN

SMALL = DQNConfig(
    total_steps=300,
    hidden_sizes=(16,),
    buffer_size=500,
    batch_size=8,
    learning_starts=50,
    eval_interval=0,
)


class TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker): proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def pickle_payload(marker: Path) -> bytes:
    payload = pickle.dumps({"q_net.weight": TouchOnUnpickle(marker)})
    # The payload is live: unpickling it does create the marker (then we remove it again).
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    return payload


def fix_meta(ckpt: Path, name: str) -> None:
    """Rewrite meta.json's size and SHA-256 of `name`, so only the file's content can fail."""
    meta = json.loads((ckpt / checkpoint.META).read_text())
    data = (ckpt / name).read_bytes()
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / checkpoint.META).write_text(json.dumps(meta))


def edit_meta(ckpt: Path, **changes: object) -> None:
    meta = json.loads((ckpt / checkpoint.META).read_text())
    meta.update(changes)
    (ckpt / checkpoint.META).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CartPole checkpoint (with replay) written by DQN.save."""
    agent = DQN("CartPole-v1", SMALL)
    agent.learn()
    return agent.save(tmp_path_factory.mktemp("ckpt") / "model", include_replay=True)


@pytest.fixture
def ckpt(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained checkpoint, free to damage."""
    copy = tmp_path / "model"
    copy.mkdir()
    for f in trained.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    return copy


# ---------------------------------------------------------------------- round trip


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "view": torch.randn(4, 4).t()}
    replay = {"obs": np.random.default_rng(0).normal(size=(7, 2)), "pos": np.array([3, 7])}
    path = checkpoint.write_checkpoint(tmp_path / "c", {"x": 1}, tensors, replay)
    meta, loaded, loaded_replay = checkpoint.read_checkpoint(path, with_replay=True)
    assert meta["format"] == checkpoint.FORMAT_NAME
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    assert meta["x"] == 1
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)
    assert loaded_replay is not None
    for k, v in replay.items():
        np.testing.assert_array_equal(loaded_replay[k], v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporaries left


def test_rewrite_replaces_the_old_checkpoint(tmp_path: Path) -> None:
    checkpoint.write_checkpoint(tmp_path / "c", {"x": 1}, {"a": torch.zeros(2)})
    checkpoint.write_checkpoint(tmp_path / "c", {"x": 2}, {"a": torch.ones(2)})
    meta, tensors, _ = checkpoint.read_checkpoint(tmp_path / "c")
    assert meta["x"] == 2
    assert torch.equal(tensors["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_failed_write_leaves_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint.write_checkpoint(tmp_path / "c", {"x": 1}, {"a": torch.zeros(2)})

    def broken_save(tensors: object, filename: str) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_torch", broken_save)
    with pytest.raises(OSError, match="No space"):
        checkpoint.write_checkpoint(tmp_path / "c", {"x": 2}, {"a": torch.ones(2)})
    assert checkpoint.read_meta(tmp_path / "c")["x"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_crash_between_the_two_renames_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing `best` renames it aside, then the new one in; dying in between leaves only
    `.best.old`, which remove_temporaries puts back."""
    run = tmp_path / "run"
    checkpoint.write_checkpoint(run / "best", {"x": 1}, {"a": torch.zeros(2)})
    real_rename = os.rename
    calls = []

    def rename(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies after moving the old copy aside
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_checkpoint(run / "best", {"x": 2}, {"a": torch.ones(2)})
    monkeypatch.undo()
    assert not (run / "best").exists()
    assert (run / ".best.old").is_dir()
    (run / ".config.toml.x1.tmp").write_text("torn")  # an atomic_write_text that died
    checkpoint.remove_temporaries(run)
    assert checkpoint.read_meta(run / "best")["x"] == 1
    assert sorted(p.name for p in run.iterdir()) == ["best"]


def test_atomic_write_text(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    checkpoint.atomic_write_text(target, "one")
    checkpoint.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    with checkpoint.atomic_output(target) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError, match="mid-write"), checkpoint.atomic_output(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]  # no temporary left


# ---------------------------------------------------------------------- run directories


def _periodic(run: Path, step: int) -> Path:
    return checkpoint.write_checkpoint(
        run / "checkpoints" / f"step_{step:010d}", {"step": step}, {"a": torch.zeros(1)}
    )


def test_latest_checkpoint_skips_damaged_and_foreign_dirs(tmp_path: Path) -> None:
    for step in (500, 1000, 1500):
        _periodic(tmp_path, step)
    root = tmp_path / "checkpoints"
    (root / "step_0000001500" / checkpoint.MODEL).write_bytes(b"bad")
    (root / ".step_0000002000.x.tmp").mkdir()  # an interrupted write
    (root / "step_latest").mkdir()  # not a step number
    (root / "step_²").mkdir()  # a digit that int() refuses
    assert [p.name for p in checkpoint.checkpoint_dirs(tmp_path)] == [
        "step_0000000500",
        "step_0000001000",
        "step_0000001500",
    ]
    assert checkpoint.latest_checkpoint(tmp_path) == root / "step_0000001000"
    assert checkpoint.latest_checkpoint(tmp_path / "nowhere") is None


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 10, 3):
        _periodic(tmp_path, step)
    checkpoint.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_0000000003",
        "step_0000000010",
    ]


# ---------------------------------------------------------------------- damaged checkpoints


def test_the_fixture_loads(ckpt: Path) -> None:
    agent = DQN.load(ckpt, with_replay=True)
    assert agent.counters.step == SMALL.total_steps
    assert len(agent.learner.replay) == SMALL.total_steps


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        DQN.load(tmp_path / "nothing")


def test_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no qlearn checkpoint"):
        DQN.load(tmp_path)


def test_missing_meta(ckpt: Path) -> None:
    (ckpt / checkpoint.META).unlink()
    with pytest.raises(CheckpointError, match=r"no meta.json"):
        checkpoint.read_checkpoint(ckpt)


@pytest.mark.parametrize("name", [checkpoint.MODEL, checkpoint.REPLAY])
def test_missing_file(ckpt: Path, name: str) -> None:
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name}' is missing"):
        DQN.load(ckpt)


@pytest.mark.parametrize("name", [checkpoint.MODEL, checkpoint.REPLAY])
def test_truncated_file(ckpt: Path, name: str) -> None:
    data = (ckpt / name).read_bytes()
    (ckpt / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{name}' is truncated or altered: \d+ bytes"):
        DQN.load(ckpt)


@pytest.mark.parametrize("name", [checkpoint.MODEL, checkpoint.REPLAY])
def test_corrupt_bytes(ckpt: Path, name: str) -> None:
    data = bytearray((ckpt / name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    (ckpt / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name}' is corrupt: SHA-256 mismatch"):
        DQN.load(ckpt)


def test_truncated_safetensors_with_matching_meta(ckpt: Path) -> None:
    """A file cut short whose meta was fixed up too: the safetensors parser refuses it."""
    data = (ckpt / checkpoint.MODEL).read_bytes()
    (ckpt / checkpoint.MODEL).write_bytes(data[:-100])
    fix_meta(ckpt, checkpoint.MODEL)
    with pytest.raises(CheckpointError, match="is not a valid safetensors file"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    "text",
    ['{"format": "qlearn-checkpoint",', "", "\x00\x01 not json", "[" * 100_000],
    ids=["cut", "empty", "binary", "deeply-nested"],
)
def test_malformed_json(ckpt: Path, text: str) -> None:
    (ckpt / checkpoint.META).write_text(text)
    with pytest.raises(CheckpointError, match="is malformed JSON"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    "content",
    [{"model_type": "bert", "hidden_size": 768}, [1, 2, 3], "qlearn-checkpoint", None],
    ids=["other-tool", "list", "string", "null"],
)
def test_foreign_json(ckpt: Path, content: object) -> None:
    (ckpt / checkpoint.META).write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="is not a qlearn checkpoint"):
        DQN.load(ckpt)


def test_newer_format_version(ckpt: Path) -> None:
    edit_meta(ckpt, format_version=checkpoint.FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=r"format version 2, newer than this qlearn reads"):
        DQN.load(ckpt)


@pytest.mark.parametrize("version", [0, "1", None, 1.5])
def test_invalid_format_version(ckpt: Path, version: object) -> None:
    edit_meta(ckpt, format_version=version)
    with pytest.raises(CheckpointError, match="invalid format_version"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"model.safetensors": {"bytes": "many", "sha256": "x"}},
        {"model.safetensors": {"bytes": float("inf"), "sha256": "x"}},
        {"model.safetensors": []},
    ],
    ids=["no-model", "bytes-text", "bytes-inf", "entry-list"],
)
def test_malformed_file_list(ckpt: Path, files: dict) -> None:
    edit_meta(ckpt, files=files)
    with pytest.raises(CheckpointError, match=r"lists no model|malformed entry"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    "name", ["../meta.json", "/etc/hostname", ".hidden", "a/model.safetensors"]
)
def test_file_list_naming_a_path_outside(ckpt: Path, name: str) -> None:
    files = json.loads((ckpt / checkpoint.META).read_text())["files"]
    edit_meta(ckpt, files={name: {"bytes": 1, "sha256": "x"}, **files})
    with pytest.raises(CheckpointError, match="lists a file outside the checkpoint"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("config", {"gamma": 7}, "gamma = 7.0 is out of range"),
        ("config", ["gamma"], "must be a table"),
        ("env_spec", "box", "malformed meta.json"),
        ("counters", {"step": "many"}, "counters.step = 'many' is not a number"),
        ("counters", {"step": float("inf")}, "malformed meta.json"),
        ("counters", {"step": -5}, "is not a count"),
        ("counters", {"steps": 5}, "unknown keys"),
        ("agent", {"num_updates": 1, "numpy_rng": {"state": "x"}}, "malformed counter"),
        ("agent", {}, "malformed counter"),
        ("env_kwargs", ["x"], "env_kwargs is list"),
        ("env_id", 42, "invalid env_id 42"),
    ],
)
def test_malformed_meta_values(ckpt: Path, key: str, value: object, match: str) -> None:
    edit_meta(ckpt, **{key: value})
    with pytest.raises(Exception, match=match) as info:
        DQN.load(ckpt, with_replay=True)
    assert info.type.__module__ == "qlearn.errors"


def test_env_id_that_would_import_a_module(ckpt: Path, tmp_path: Path) -> None:
    """gymnasium.make('mod:Env-v0') imports `mod`; a checkpoint must not make load do that."""
    marker = tmp_path / "imported"
    module = tmp_path / "qlearn_evil_module.py"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    edit_meta(ckpt, env_id="qlearn_evil_module:CartPole-v1")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(CheckpointError, match="would import a module; pass env="):
            DQN.load(ckpt)
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists()
    assert DQN.load(ckpt, env="CartPole-v1").env_id == "CartPole-v1"


@pytest.mark.parametrize("other", ["Acrobot-v1", "MountainCar-v0"])
def test_space_mismatch_names_both_shapes(trained: Path, other: str) -> None:
    with pytest.raises(CheckpointError) as info:
        DQN.load(trained, env=other)
    message = str(info.value)
    assert "observations Box(4,) float32, actions Discrete(2)" in message
    other_shape = {"Acrobot-v1": "Box(6,) float32, actions Discrete(3)"}.get(
        other, "Box(2,) float32, actions Discrete(3)"
    )
    assert f"env '{other}' has observations {other_shape}" in message


def test_network_mismatch(ckpt: Path) -> None:
    meta = json.loads((ckpt / checkpoint.META).read_text())
    meta["config"]["hidden_sizes"] = [32]
    (ckpt / checkpoint.META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit the network"):
        DQN.load(ckpt)


# ---------------------------------------------------------------------- pickles never run


def test_bare_pickle_model_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload_file = tmp_path / "model.pt"
    torch.save({"model": TouchOnUnpickle(marker)}, payload_file)
    with pytest.raises(CheckpointError, match="never loads pickled files"):
        DQN.load(payload_file)
    # A run dir holding only the pickle is no checkpoint either.
    with pytest.raises(CheckpointError, match="holds no qlearn checkpoint"):
        DQN.load(tmp_path)
    assert not marker.exists()


def test_pickle_as_model_safetensors_is_refused(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (ckpt / checkpoint.MODEL).write_bytes(pickle_payload(marker))
    fix_meta(ckpt, checkpoint.MODEL)  # size and hash pass: the parser itself must refuse
    checkpoint.read_meta(ckpt)
    with pytest.raises(CheckpointError, match=r"model.safetensors' is not a valid safetensors"):
        DQN.load(ckpt)
    assert not marker.exists()


def test_pickle_as_replay_safetensors_is_refused(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (ckpt / checkpoint.REPLAY).write_bytes(pickle_payload(marker))
    fix_meta(ckpt, checkpoint.REPLAY)
    with pytest.raises(CheckpointError, match=r"replay.safetensors' is not a valid safetensors"):
        DQN.load(ckpt, with_replay=True)
    assert not marker.exists()


def test_pickle_as_meta_json_is_refused(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (ckpt / checkpoint.META).write_bytes(pickle_payload(marker))
    with pytest.raises(CheckpointError, match=r"meta.json' is malformed JSON"):
        DQN.load(ckpt)
    assert not marker.exists()


# ---------------------------------------------------------------------- training metadata


def test_training_meta_round_trips_through_json() -> None:
    spec = EnvSpec("box", (4,), "float32", 2)
    counters = checkpoint.Counters(step=7, episodes=2, target_step=9, best_eval=1.5, wall_time=0.25)
    meta = checkpoint.TrainingMeta(
        SMALL, spec, "CartPole-v1", {"max_episode_steps": 50}, counters, {"num_updates": 3}
    )
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["agent"] == {"num_updates": 3}  # the key checkpoints have always used
    assert checkpoint.TrainingMeta.from_dict(data, "here") == meta


def test_counters_of_older_checkpoints_name_the_target_step_total_steps() -> None:
    old = {"step": 5, "episodes": 1, "total_steps": 40, "best_eval": -1.0}
    assert checkpoint.counters_from_dict(old) == checkpoint.Counters(
        step=5, episodes=1, target_step=40, best_eval=-1.0
    )


def test_env_id_is_needed_only_when_the_caller_chose_no_env() -> None:
    data = checkpoint.TrainingMeta(
        SMALL, EnvSpec("box", (4,), "float32", 2), None, {}, checkpoint.Counters(), {}
    ).to_dict()
    del data["env_id"]
    assert checkpoint.TrainingMeta.from_dict(data, "here", need_env_id=False).env_id is None
    with pytest.raises(CheckpointError, match=r"'here' has malformed meta\.json: 'env_id'"):
        checkpoint.TrainingMeta.from_dict(data, "here")
