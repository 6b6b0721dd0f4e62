"""`qlearn tabular` and `qlearn plan` through the real entry point, `qlearn.cli.main`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from qlearn.agents import evaluate_policy
from qlearn.cli import main
from qlearn.planning import TabularMDP, policy_iteration, value_iteration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Settings that solve the non-slippery lake in a second (see tests/agents/test_tabular.py).
FAST_LAKE = [
    "--no-slippery",
    "--episodes", "2000",
    "--set", "alpha=0.5",
    "--set", "gamma=0.95",
    "--set", "epsilon_end=0.1",
    "--set", "exploration_fraction=1.0",
]  # fmt: skip


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call the console entry point in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_tabular_trains_evaluates_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "lake.png"
    code, out, err = run(
        ["tabular", "FrozenLake-v1", *FAST_LAKE, "--eval-episodes", "50", "--plot", str(plot)],
        capsys,
    )
    assert code == 0, err
    assert "16 states, 4 actions; Q-learning for 2000 episodes (alpha 0.5, gamma 0.95" in out
    assert (
        "over 50 episodes (seed 1): mean return 1.000 +/- 0.000, success rate 1.000 (success: "
        "terminated on the goal cell G, not in a hole), mean length 6.0"
    ) in out
    # stderr is not a terminal here: a status line per tenth of the episodes, no bar frames.
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"episode {n:,}/2,000" for n in range(200, 2001, 200)
    ]
    assert "episodes/s" in lines[-1] and "return (last 100) " in lines[-1]
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {plot}" in out


def test_tabular_progress_bar_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(
        ["tabular", "FrozenLake-v1", "--episodes", "300", "--eval-episodes", "5"], capsys
    )
    assert code == 0, err
    assert "\r" in err and "/300 [" in err and "episode/s" in err
    assert "episode 300/300" not in err


def test_success_rate_on_cliffwalking_counts_reaching_the_goal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every greedy episode of the optimal plan reaches the goal with return -13; "return > 0"
    used to report a success rate of 0.000."""
    code, out, err = run(["plan", "CliffWalking-v1", "--eval-episodes", "20"], capsys)
    assert code == 0, err
    assert (
        "mean return -13.000 +/- 0.000, success rate 1.000 (success: terminated at the goal, "
        "not cut off by the time limit), mean length 13.0"
    ) in out


def test_env_kwarg_is_the_same_as_no_slippery(capsys: pytest.CaptureFixture[str]) -> None:
    common = ["tabular", "FrozenLake-v1", "--episodes", "50", "--eval-episodes", "5"]
    code_a, out_a, _ = run([*common, "--no-slippery", "--no-progress"], capsys)
    code_b, out_b, _ = run([*common, "--env-kwarg", "is_slippery=false", "--no-progress"], capsys)
    assert code_a == code_b == 0
    drop_timing = [line.split(" in ")[0] for line in out_a.splitlines()]
    assert drop_timing == [line.split(" in ")[0] for line in out_b.splitlines()]


@pytest.mark.parametrize("method", ["value-iteration", "policy-iteration"])
def test_plan_prints_sweeps_and_the_evaluation(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "plan.png"
    code, out, err = run(
        [
            "plan",
            "FrozenLake-v1",
            "--method",
            method,
            "--gamma",
            "0.95",
            "--eval-episodes",
            "200",
            "--plot",
            str(plot),
        ],
        capsys,
    )
    assert code == 0, err
    env = gym.make("FrozenLake-v1")
    mdp = TabularMDP.from_env(env)
    if method == "value-iteration":
        result = value_iteration(mdp, 0.95)
        assert f"converged in {result.num_sweeps} sweeps" in out
    else:
        result = policy_iteration(mdp, 0.95)
        assert f"stable after {result.num_iterations} policy evaluations" in out
    expected = evaluate_policy(env, result.policy, num_episodes=200, seed=0)
    assert f"success rate {expected.success_rate:.3f}" in out
    # the printed policy: start goes left, holes and goal shown by their letters
    assert "greedy policy:\n  < ^ < ^\n  < H < H\n  ^ v < H\n  H > v G" in out
    assert plot.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tabular", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["tabular", "CartPole-v1"], "allowed: Discrete observations and Discrete actions"),
        (["tabular", "FrozenLake-v1", "--set", "alpha=2"], "alpha = 2.0 is out of range"),
        (["tabular", "FrozenLake-v1", "--set", "alhpa=0.5"], "unknown key 'alhpa' in --set"),
        (["tabular", "FrozenLake-v1", "--episodes", "0"], "num_episodes = 0 is out of range"),
        (["tabular", "FrozenLake-v1", "--env-kwarg", "is_slipery=0"], "cannot make env"),
        (["tabular", "FrozenLake-v1", "--env-kwarg", "slippery"], "expected KEY=VALUE"),
        (["tabular", "Taxi-v4", "--plot", "taxi.png"], "--plot needs a grid world"),
        (
            ["tabular", "FrozenLake-v1", "--plot", "lake.jpg"],
            "--plot 'lake.jpg' is not a .png, .svg or .pdf file",
        ),
        (["tabular", "FrozenLake-v1", "--seed", "-1"], "seed = -1 is out of range"),
        (["plan", "FrozenLake-v1", "--seed", "-1"], "seed = -1 is out of range"),
        (["plan", "FrozenLake-v1", "--method", "sarsa"], "--method 'sarsa' is invalid"),
        (["plan", "FrozenLake-v1", "--gamma", "2"], "gamma = 2.0 is out of range"),
        (["plan", "CartPole-v1"], "allowed: Discrete observations"),
        (["plan", "Taxi-v3"], "Please use `Taxi-v4`"),
        (
            [
                "plan",
                "FrozenLake-v1",
                "--no-slippery",
                "--gamma",
                "1",
                "--method",
                "policy-iteration",
            ],
            "with gamma = 1 the policy never reaches a terminal state",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in out + err


def test_console_script_process_prints_no_traceback() -> None:
    # What the `qlearn` console script runs (pyproject: qlearn = "qlearn.cli:main").
    script = "import sys; from qlearn.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", script, "tabular", "CartPole-v1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "allowed: Discrete observations" in lines[0]
    assert proc.stdout == ""


def test_plot_shows_values_of_the_grid(tmp_path: Path) -> None:
    from qlearn.plots import plot_value_grid

    desc = np.array([list("SF"), list("HG")], dtype="c")
    path = plot_value_grid(
        np.array([0.5, 1.0, 0.0, 0.0]), desc, tmp_path / "g.png", policy=[1, 1, 0, 0]
    )
    assert path.read_bytes().startswith(PNG_MAGIC)
