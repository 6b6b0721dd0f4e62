"""`qlearn train --seeds`, `eval`/`plot` of a multi-seed run dir, and `qlearn compare`."""

from __future__ import annotations

import json

import pytest

from qlearn.cli import main

SETTINGS = ["eval_interval=500", "eval_episodes=2", "learning_starts=300", "hidden_sizes=[16]"]
SETTINGS += ["buffer_size=2000", "train_interval=8"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def train(run_dir, capsys, extra: list[str] = ()) -> str:  # type: ignore[assignment]
    args = ["train", "CartPole-v1", "--seeds", "3", "--steps", "1000", "--run-dir", run_dir]
    args += ["--no-progress"]
    for setting in [*SETTINGS, *extra]:
        args += ["--set", setting]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return out


def test_train_eval_plot_compare(tmp_path, capsys) -> None:
    out = train(tmp_path / "a", capsys)
    assert "trained 3 seeds (0, 1, 2) for 1000 steps" in out
    assert "IQM" in out and "solved (>= 475)" in out
    assert sorted(p.name for p in (tmp_path / "a").glob("seed_*")) == ["seed_0", "seed_1", "seed_2"]

    code, out, err = run_cli(["eval", tmp_path / "a", "--episodes", "2", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["seeds"] == [0, 1, 2] and len(data["scores"]) == 3
    assert data["iqm"]["low"] <= data["iqm"]["estimate"] <= data["iqm"]["high"]
    assert data["fraction_solved"] in (0.0, 1 / 3, 2 / 3, 1.0)

    code, out, err = run_cli(["eval", tmp_path / "a" / "seed_1", "--episodes", "2"], capsys)
    assert code == 0 and "mean return" in out  # a seed's run dir is an ordinary run dir

    code, out, err = run_cli(["train", "--resume", tmp_path / "a", "--no-progress"], capsys)
    assert code == 0, err
    assert "resuming" in err and "3 seeds" in err and "trained 3 seeds" in out

    code, out, err = run_cli(["play", tmp_path / "a", "--gif", tmp_path / "x.gif"], capsys)
    assert code == 2 and err.count("error:") == 1 and "seed_0" in err

    code, out, err = run_cli(["plot", tmp_path / "a"], capsys)
    assert code == 0, err
    assert (tmp_path / "a" / "seeds.png").stat().st_size > 0

    train(tmp_path / "b", capsys, ["double_q=false"])
    fig = tmp_path / "cmp.png"
    args = ["compare", tmp_path / "a", tmp_path / "b", "--out", fig]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "P(improvement)" in out and fig.stat().st_size > 0
    code, out, err = run_cli(["compare", tmp_path / "a", tmp_path / "b", "--json"], capsys)
    runs = json.loads(out)["runs"]
    assert [r["name"] for r in runs] == ["a", "b"]
    assert 0.0 <= runs[1]["probability_of_improvement_over_first"]["estimate"] <= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "CartPole-v1", "--seeds", "0"], "--seeds 0 is invalid"),
        (["compare", "{tmp}"], "not a multi-seed run dir"),
        (["train", "--resume", "{tmp}", "--seeds", "2"], "drop --seeds"),
        (["train", "CartPole-v1", "--seeds", "2", "--set", "num_envs=2"], "num_envs = 2"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, args, message) -> None:
    code, _, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2
    assert err.count("error:") == 1 and message in err and "Traceback" not in err
