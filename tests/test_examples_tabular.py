"""The tabular examples run in quick mode and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_qtable_example_prints_the_table_before_and_after(tmp_path: Path) -> None:
    out = run_example("01_qtable_frozenlake.py", cwd=tmp_path)
    before, after = out.split("Q-table after")
    assert "Q-table before training" in before
    assert before.count(" 0.000") == 16 * 4  # all zeros
    assert after.count(" 0.000") < 16 * 4
    assert "greedy evaluation: success rate" in after


def test_two_state_example_prints_the_known_sweeps(tmp_path: Path) -> None:
    out = run_example("02_value_iteration_two_state.py", cwd=tmp_path)
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert [rows[str(n)][1] for n in (1, 2, 3, 4, 5)] == [
        "1.0000000", "2.8000000", "3.6100000", "5.0680000", "5.7241000"
    ]  # fmt: skip
    assert rows["74"][1] == rows["74"][3] == "14.7307838"
    assert rows["102"][1] == rows["102"][3] == "14.7365250"
    assert rows["limit"][1] == rows["last"][1] == "14.7368421"


def test_planning_example_writes_the_heatmap(tmp_path: Path) -> None:
    out = run_example("03_frozenlake_planning.py", "--plot", "values.png", cwd=tmp_path)
    values = [line.split("= ")[-1] for line in out.splitlines() if "V(start) =" in line]
    assert values == ["0.542026"] * 3  # value iteration, policy iteration, linear solve
    assert (tmp_path / "values.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
def test_model_estimation_example_compares_with_the_true_model(tmp_path: Path) -> None:
    out = run_example("04_model_estimation.py", cwd=tmp_path)
    gap = float(out.strip().splitlines()[-1].split()[1])
    assert gap <= 0.05
    assert "pairs never tried: 0" in out
