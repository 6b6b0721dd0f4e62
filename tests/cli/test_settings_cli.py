"""`qlearn settings`: every `--set` key with its default and range, and the help points to it."""

from __future__ import annotations

import dataclasses

import pytest

from qlearn.cli import main
from qlearn.config import DQNConfig, TabularConfig


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call the console entry point in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("name", "cls"), [("dqn", DQNConfig), ("tabular", TabularConfig)])
def test_settings_lists_every_key(
    name: str, cls: type[DQNConfig | TabularConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["settings", name], capsys)
    assert code == 0, err
    # A key's line is indented two spaces; its docstring, six.
    key_lines = [line for line in out.splitlines() if line.startswith("  ") and line[2] != " "]
    keys = [line[2:].split(" = ")[0] for line in key_lines]
    assert sorted(keys) == sorted(f.name for f in dataclasses.fields(cls))
    assert f"{cls.__name__}: algorithm settings" in out
    assert f"{cls.__name__}: run settings" in out


def test_settings_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["settings", "tabular"], capsys)
    assert code == 0
    assert "  alpha = 0.1  (float; (0, 1])\n      Learning rate of the Bellman update.\n" in out
    assert "  epsilon_end = 0.01  (float; [0, 1], at most epsilon_start)\n" in out
    code, out, _ = run(["settings"], capsys)  # dqn by default
    assert "  device = \"cpu\"  (str; a torch device such as 'cpu')\n" in out
    run_part = out.split("DQNConfig: run settings")[1]
    assert "  device = " in run_part and "  gamma = " not in run_part


def test_unknown_config_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["settings", "ppo"], capsys)
    assert code == 2
    assert err == "error: settings 'ppo' is invalid; allowed: dqn, tabular\n"


@pytest.mark.parametrize(("command", "name"), [("train", "dqn"), ("tabular", "tabular")])
def test_set_help_points_to_the_settings(
    command: str, name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert f"qlearn settings {name}" in " ".join(out.split())
