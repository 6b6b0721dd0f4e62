"""`qlearn tune`: a tiny study writes its files and a summary; every bad input ends with one
`error:` line and exit code 2; `--resume` continues a study."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from qlearn.cli import main
from qlearn.config import DQNConfig

SPACE = """\
include_defaults = false
learning_rate = { low = 1e-4, high = 1e-2, log = true }
learning_starts = { choices = [100] }
hidden_sizes = { choices = [[16]] }
buffer_size = { choices = [1000] }
"""


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


TINY = ["--steps", "600", "--seeds", "2", "--evaluations", "2", "--eval-episodes", "3"]


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


def test_tune_writes_the_study_and_a_summary(
    tmp_path: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study"
    args = ["tune", "CartPole-v1", "--trials", "2", *TINY, "--space", space]
    code, out, err = run_cli([*args, "--study-dir", study, "--startup-trials", "1"], capsys)
    assert code == 0, err
    assert "trial 0: IQM" in err and "trial 1: IQM" in err
    assert "2 trials on CartPole-v1 (600 steps x 2 seeds each): 2 complete, 0 pruned" in out
    assert "best trial" in out and "learning_rate = " in out
    assert f"qlearn train CartPole-v1 --config {study / 'best.toml'}" in out
    for name in ("study.db", "best.toml", "trials.csv", "history.png", "importances.png"):
        assert (study / name).is_file(), name
    best = (study / "best.toml").read_text()
    assert best.startswith("# Tuned by: qlearn tune CartPole-v1 --trials=2 --steps=600")
    assert DQNConfig.from_toml(study / "best.toml").total_steps == 600
    with open(study / "trials.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["complete", "complete"]

    # `train --config` takes the best config.
    code, out, err = run_cli(
        [
            "train",
            "CartPole-v1",
            "--config",
            study / "best.toml",
            "--steps",
            "200",
            "--run-dir",
            tmp_path / "run",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err

    # --resume with a larger total runs the missing trial only.
    code, out, err = run_cli(["tune", "--resume", study, "--trials", "3"], capsys)
    assert code == 0, err
    assert "trial 2: IQM" in err and "trial 0" not in err
    assert "3 trials on CartPole-v1" in out
    assert "# Tuned by: the study in" in (study / "best.toml").read_text()


@pytest.mark.parametrize(
    ("space_text", "message"),
    [
        ("gama = { choices = [0.9] }\n", "unknown parameter 'gama' in space file"),
        ("gamma = { low = 0.99, high = 0.9 }\n", "is an empty range: low = 0.99 > high = 0.9"),
        ("gamma = { choices = [] }\n", "has an empty list of choices"),
        ("exploration_fraction = { low = 0.0, high = 0.3 }\n", "allowed: (0, 1]"),
        ("gamma = [0.9\n", "is not valid TOML"),
    ],
)
def test_a_bad_space_file_is_one_error_line(
    tmp_path: Path, space_text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "space.toml"
    path.write_text(space_text)
    args = ["tune", "CartPole-v1", "--space", path, "--study-dir", tmp_path / "s"]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, message)
    assert not (tmp_path / "s").exists()  # nothing created before the input is checked


def test_an_unwritable_study_folder_is_one_error_line(
    tmp_path: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["tune", "CartPole-v1", *TINY, "--space", space, "--study-dir", blocker / "study"]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, "is not writable")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune"], "give an env id"),
        (["tune", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["tune", "CartPole-v1", "--seeds", "0"], "--seeds = 0 is invalid"),
        (["tune", "CartPole-v1", "--jobs", "0"], "--jobs = 0 is invalid"),
        (["tune", "CartPole-v1", "--steps", "0"], "steps = 0 is invalid"),
        (["tune", "CartPole-v1", "--set", "gama=0.9"], "unknown key 'gama' in --set"),
        (["tune", "CartPole-v1", "--resume", "x"], "--resume continues the study"),
    ],
)
def test_bad_arguments_are_one_error_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli([*args, "--study-dir", tmp_path / "s"], capsys)
    assert_one_error_line(code, err, message)


def test_resume_needs_a_study_and_a_new_study_a_fresh_folder(
    tmp_path: Path, space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["tune", "--resume", tmp_path], capsys)
    assert_one_error_line(code, err, "holds no study (study.db is missing)")
    (tmp_path / "study.db").write_text("")  # what matters is that the folder is taken
    args = ["tune", "CartPole-v1", *TINY, "--space", space, "--study-dir", tmp_path]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, "already holds a study; continue it with --resume")
