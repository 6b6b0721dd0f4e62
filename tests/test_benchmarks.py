"""Smoke versions of the benchmark scripts: each runs end to end on a tiny budget and writes its
JSON (to a temporary folder, never over the committed results)."""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_replay_memory_script(tmp_path: Path) -> None:
    # 1M transitions are estimated from the layout; only the small buffer is allocated.
    run_script("replay_memory.py", "--small", "2000", "--results", str(tmp_path), cwd=tmp_path)
    result = json.loads((tmp_path / "replay_memory.json").read_text())
    assert result["capacity"] == 1_000_000
    assert result["frame_stack_bytes"] <= 8e9 < 50e9 < result["naive_bytes"]


def test_atari_throughput_script(tmp_path: Path) -> None:
    pytest.importorskip("ale_py")
    run_script(
        "atari_throughput.py", "--steps", "40", "--warmup", "40", "--results", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    result = json.loads((tmp_path / "atari_throughput.json").read_text())
    assert set(result["steps_per_s"]) == {"env", "act", "train"}
    assert result["updates"] > 0 and all(v > 0 for v in result["steps_per_s"].values())


def test_presets_script(tmp_path: Path) -> None:
    out = run_script(
        "presets.py", "--env", "CartPole-v1", "--preset", "cartpole", "--seeds", "0",
        "--threshold", "0", "--steps", "2000", "--jobs", "1", "--runs", str(tmp_path / "runs"),
        "--results", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert "passed: 1/1" in out
    report = json.loads((tmp_path / "preset_cartpole.json").read_text())
    assert report["runs"][0]["steps"] == 2000


def test_minatar_script(tmp_path: Path) -> None:
    pytest.importorskip("minatar")
    run_script(
        "minatar_learning.py", "--quick", "--games", "Breakout", "--runs-dir",
        str(tmp_path / "runs"), "--results", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    report = json.loads((tmp_path / "minatar_quick.json").read_text())
    assert {r["algo"] for r in report["runs"]} == {"dqn", "rainbow"}
    assert (tmp_path / "minatar_quick_Breakout.png").stat().st_size > 0
    for row in report["runs"]:
        assert (tmp_path / row["curve_png"]).exists()


def test_speed_script_qlearn_side(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SB3 side needs the `bench` extra; the qlearn workers and the table run here.
    monkeypatch.syspath_prepend(str(BENCH))  # as running the script does, for `import common`
    spec = importlib.util.spec_from_file_location("speed", BENCH / "speed.py")
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    solve = speed.qlearn_solve(0, 2_000, 1_000)
    assert solve["steps"] <= 2_000 and len(solve["evals"]) >= 1
    assert solve["solved"] == (solve["evals"][-1][1] >= speed.SOLVED)
    zoo = speed.qlearn_zoo_solve(0, 2_000, 1_000)
    assert zoo["library"] == "qlearn-zoo" and zoo["steps"] <= 2_000
    # Re-scoring: always pushing left ends CartPole episodes after ~9 steps, far below 475.
    rescore = speed._rescore(lambda obs: 0, 0, True)
    assert rescore["rescore_solved"] is False and 8 <= rescore["rescore_mean"] <= 11
    assert speed._rescore(lambda obs: 0, 0, False) == {}
    engine = speed.qlearn_engine(0, 1_500)
    assert engine["steps"] == 1_500 and engine["wall_s"] > 0
    throughput = speed.throughput(1_000, [1, 4])
    assert [row["num_envs"] for row in throughput["rows"]] == [1, 4]
    assert throughput["replay_bytes_per_transition"] == 39
    speed._print_table({"throughput": throughput})


def test_checkpoint_overhead_script(tmp_path: Path) -> None:
    # 3,000 steps: no periodic checkpoint falls due, only the one at the end of the run.
    run_script(
        "checkpoint_overhead.py", "--seeds", "0", "--steps", "3000", "--results", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    result = json.loads((tmp_path / "checkpoint_overhead_cartpole.json").read_text())
    (row,) = result["per_seed"]
    assert row["checkpoints"] == [3000] and row["same_weights"]
    assert 0 < row["checkpoint_s"] < row["wall_on_s"]


def test_serve_load_script(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    out = run_script("serve_load.py", "--quick", "--results", str(tmp_path), cwd=tmp_path)
    assert "server alive after the load: True" in out
    report = json.loads((tmp_path / "serve_load_quick.json").read_text())
    assert [(r["batch"], r["path"].split(",")[0]) for r in report["rows"]][:3] == [
        (1, "HTTP /predict"),
        (1, "HTTP /predict"),
        (1, "in process: onnxruntime"),
    ]
    for row in report["robustness"]:
        assert row["good_correct"] == row["good_sent"] > 0
        assert row["bad_4xx"] == row["bad_sent"] >= 11  # every malformed kind at least once
        assert row["bad_other"] == 0


def test_common_scaffolding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    parser = common.make_parser("Title line\nwrapped.\n\nMore.")
    assert parser.description == "Title line wrapped."
    common.add_seeds(parser, "0,1")
    common.add_quick(parser)
    common.add_results(parser)
    args = parser.parse_args([])
    assert (args.seeds, args.quick, args.results) == ([0, 1], False, BENCH / "results")
    assert parser.parse_args(["--seeds", "3,1,2", "--quick"]).seeds == [3, 1, 2]
    for bad in ("", "1,x", "1,-2", "1,,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="allowed: comma-separated integers"):
            common.parse_seeds(bad)

    out = common.write_json(tmp_path / "sub" / "r.json", {"a": 1, "rows": [1.5]})
    record = json.loads(out.read_text())
    assert (record["a"], record["rows"]) == (1, [1.5])
    info = record[common.MACHINE_INFO_KEY]
    assert info["cpus"] >= 1 and len(info["load_average"]) == 3
    assert set(info) >= {"python", "platform", "qlearn", "git_commit", "torch"}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary left

    table = common.markdown_table(["x", "y"], [[1, "a"], [2.5, ""]])
    assert table == "| x | y |\n|---|---|\n| 1 | a |\n| 2.5 |  |"


def test_speed_regression_script(tmp_path: Path) -> None:
    # HEAD against itself: the script's plumbing (git archive, one interpreter per tree, ratios);
    # same code, same seed, so the steps to solve must match.
    run_script(
        "speed_regression.py", "--quick", "--base", "HEAD", "--results", str(tmp_path), cwd=tmp_path
    )
    result = json.loads((tmp_path / "speed_regression.json").read_text())
    summary = result["summary"]
    assert summary["solve_seeds_with_equal_steps"] == 1
    assert {"base", "new"} == {r["tree"] for r in result["runs"]["throughput"]}
    assert summary["steps_per_s_32_envs_new_over_base"] > 0


def test_distributed_script(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run_script("distributed.py", "--quick", "--results", str(tmp_path), cwd=tmp_path)
    result = json.loads((tmp_path / "distributed_quick.json").read_text())
    assert set(result["collect_steps_per_s"]) == {"1"}
    assert all(v > 0 for v in result["collect_steps_per_s"].values())
    assert result["learner_updates_per_s"]["in_process_memory"] > 0
    assert result["messages"]["broadcast_bytes"] > 0
    assert [r["actors"] for r in result["solve"]] == [0, 2]
    assert all(r["steps"] >= 1000 for r in result["solve"])


def test_many_seeds_script(tmp_path: Path) -> None:
    out = run_script("many_seeds.py", "--quick", "--results", str(tmp_path), cwd=tmp_path)
    assert "wall vs 1 seed" in out and "peak RSS" in out
    report = json.loads((tmp_path / "many_seeds_cartpole_ratio_rss_quick.json").read_text())
    assert report["multi"]["num_seeds"] == 2 and report["multi"]["steps"] == 1500
    assert report["multi"]["engine"] == "StackedMLPLearner"
    assert [r["num_seeds"] for r in report["rss"]] == [1, 2]


def test_tune_script(tmp_path: Path) -> None:
    out = run_script(
        "tune.py", "--quick", "--env", "CartPole-v1", "--results", str(tmp_path),
        "--study-dir", str(tmp_path / "studies"),
        cwd=tmp_path,
    )  # fmt: skip
    assert "| CartPole-v1 | tuned |" in out and "| CartPole-v1 | default |" in out
    result = json.loads((tmp_path / "tune_cartpole_quick.json").read_text())
    assert result["fresh_seeds"] == [100, 101]
    assert len(result["scores"]["tuned"]) == len(result["scores"]["default"]) == 2
    assert (tmp_path / "tune_cartpole_quick.png").is_file()
    assert (tmp_path / "studies" / "cartpole" / "best.toml").is_file()
