"""`qlearn export` and `qlearn serve`: the export writes what it says, and every bad input ends
with exactly one `error:` line on stderr and exit code 2, before any server starts."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("fastapi")

from qlearn import DQN, DQNConfig
from qlearn.cli import main


def run_cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `qlearn ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CartPole run of 300 steps with its final model."""
    run = tmp_path_factory.mktemp("deploy") / "run"
    config = DQNConfig(
        hidden_sizes=(16,), buffer_size=500, learning_starts=100, total_steps=300, eval_interval=0
    )
    DQN("CartPole-v1", config, run_dir=run).learn()
    return run


def test_export_writes_the_graph_and_its_sidecar(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "policy.onnx"
    code, stdout, err = run_cli(
        ["export", run_dir, "--format", "onnx", "--out", out, "--checks", 2000], capsys
    )
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} and policy.onnx.json; onnxruntime matched torch on 2000")
    assert "(1000 from the observation space, 1000 from episodes)" in stdout
    assert stdout.rstrip().endswith("actions agree")
    sidecar = json.loads((tmp_path / "sub" / "policy.onnx.json").read_text())
    assert sidecar["env_id"] == "CartPole-v1"
    assert sidecar["check"]["num_checked"] == 2000
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy.onnx", "policy.onnx.json"]


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("folder", [], "is a directory; give a file path ending in .onnx"),
        ("policy.pt", [], "does not end in .onnx"),
        ("policy.onnx", ["--format", "tflite"], "format = 'tflite' is unknown; allowed: onnx"),
        ("a_file/policy.onnx", [], "which is a file"),
    ],
)
def test_export_bad_output(
    out: str,
    extra: list[str],
    message: str,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    code, _, err = run_cli(["export", run_dir, "--out", tmp_path / out, *extra], capsys)
    assert_one_error_line(code, err, message)


def test_export_of_a_run_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["export", tmp_path / "empty", "--out", tmp_path / "p.onnx"], capsys)
    assert_one_error_line(code, err, "holds no qlearn checkpoint")
    code, _, err = run_cli(["export", tmp_path / "nope", "--out", tmp_path / "p.onnx"], capsys)
    assert_one_error_line(code, err, "does not exist")


def test_export_into_an_unwritable_folder(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.NamedTemporaryFile

    def refuse_in_locked(*args: Any, **kwargs: Any) -> Any:
        # What the OS says for a read-only folder; a mode of 0o500 would not stop root.
        if Path(kwargs.get("dir", "")) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse_in_locked)
    code, _, err = run_cli(["export", run_dir, "--out", locked / "p.onnx"], capsys)
    assert_one_error_line(code, err, "is not writable (Permission denied)")
    assert list(locked.iterdir()) == []


def test_serve_bad_input(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["serve", tmp_path / "nope.onnx"], capsys)
    assert_one_error_line(code, err, "does not exist")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")  # a pickle
    code, _, err = run_cli(["serve", tmp_path / "model.pt"], capsys)
    assert_one_error_line(code, err, "never loads pickled files")
    code, _, err = run_cli(["serve", run_dir, "--port", 70000], capsys)
    assert_one_error_line(code, err, "--port 70000 is out of range")


def test_serve_refuses_a_graph_that_does_not_match_its_sidecar(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.onnx"
    code, _, err = run_cli(["export", run_dir, "--out", out, "--checks", 2000], capsys)
    assert code == 0, err
    (tmp_path / "policy.onnx.json").unlink()
    code, _, err = run_cli(["serve", out], capsys)
    assert_one_error_line(code, err, "has no sidecar 'policy.onnx.json'")
    code, _, err = run_cli(["export", run_dir, "--out", out, "--checks", 2000], capsys)
    out.write_bytes(out.read_bytes() + b"\x00")
    code, _, err = run_cli(["serve", out], capsys)
    assert_one_error_line(code, err, "does not match its sidecar")


def test_serve_on_a_port_in_use_or_an_address_not_here(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run_cli(["serve", run_dir, "--port", port], capsys)
        assert_one_error_line(code, err, f"cannot listen on 127.0.0.1:{port}")
    # 203.0.113.0/24 is reserved for documentation: no machine has it.
    code, _, err = run_cli(["serve", run_dir, "--host", "203.0.113.7", "--port", 0], capsys)
    assert_one_error_line(code, err, "cannot listen on 203.0.113.7:0")
