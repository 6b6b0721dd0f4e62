"""`qlearn train/eval/play/plot/presets`: the happy path writes what it says, and every bad
input ends with exactly one `error:` line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from qlearn import checkpoint
from qlearn.cli import main

TRAIN_SETTINGS = [
    "--set",
    "eval_interval=1000",
    "--set",
    "eval_episodes=2",
    "--set",
    "learning_starts=500",
    "--set",
    "hidden_sizes=[32]",
    "--set",
    "buffer_size=5000",
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `qlearn ARGS` in-process: (exit code, stdout, stderr). Any exception other than
    SystemExit escapes and fails the test, as a traceback would."""
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
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CartPole run trained for 2000 steps through the CLI."""
    run = tmp_path_factory.mktemp("cli") / "run"
    try:
        main(
            [
                "train",
                "CartPole-v1",
                "--steps",
                "2000",
                "--run-dir",
                str(run),
                "--no-progress",
                *TRAIN_SETTINGS,
            ]
        )
    except SystemExit as exc:
        assert exc.code in (0, None)
    return run


# ---------------------------------------------------------------------- happy path


def test_train_writes_a_complete_run(run_dir: Path) -> None:
    for name in ("config.toml", "run.json", "episodes.csv", "train.csv", "evals.csv"):
        assert (run_dir / name).is_file(), name
    for name in ("best", "final"):
        checkpoint.read_meta(run_dir / name)
    assert checkpoint.read_meta(run_dir / "final")["counters"]["step"] == 2000
    assert tomllib.loads((run_dir / "config.toml").read_text())["hidden_sizes"] == [32]


def test_eval(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["eval", run_dir, "--episodes", "3", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["episodes"] == 3
    assert len(result["returns"]) == 3
    code, out, _ = run_cli(["eval", run_dir / "final", "--episodes", "2"], capsys)
    assert code == 0
    assert out.startswith("CartPole-v1: mean return ")


def test_train_report_and_eval_score_held_out_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`best` is chosen on the periodic evaluations' episodes; the scores printed for it (and
    for the final model) come from episodes none of them used."""
    import qlearn.train.dqn as train_dqn
    from qlearn.evaluation import held_out_eval_seed

    seeds: list[int] = []
    run_episodes = train_dqn.run_episodes

    def recording(env, act, num_episodes, seed, **kwargs):  # type: ignore[no-untyped-def]
        seeds.append(seed)
        return run_episodes(env, act, num_episodes, seed, **kwargs)

    monkeypatch.setattr(train_dqn, "run_episodes", recording)
    run = tmp_path / "run"
    settings = ["eval_interval=200", "eval_episodes=1", "learning_starts=100", "hidden_sizes=[8]"]
    args = ["train", "CartPole-v1", "--steps", "600", "--run-dir", run, "--no-progress"]
    code, _, err = run_cli([*args, *(f"--set={s}" for s in settings)], capsys)
    assert code == 0, err
    held_out = held_out_eval_seed(0)
    assert len(seeds) == 3 + 2  # three periodic evaluations, then the final and best models
    assert held_out not in seeds[:3]
    assert seeds[3:] == [held_out, held_out]
    code, _, err = run_cli(["eval", run, "--episodes", "2"], capsys)
    assert code == 0, err
    assert seeds[-1] == held_out


def test_play_writes_a_gif(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gif = tmp_path / "x.gif"
    code, out, err = run_cli(["play", run_dir, "--gif", gif], capsys)
    assert code == 0, err
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert out.startswith(f"wrote {gif} (")


def test_plot_writes_a_png(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["plot", run_dir], capsys)
    assert code == 0, err
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = tmp_path / "sub" / "curve.png"
    code, _, err = run_cli(["plot", run_dir, "--out", png], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["presets"], capsys)
    assert code == 0
    assert "cartpole" in out.split()
    code, out, _ = run_cli(["presets", "cartpole"], capsys)
    assert code == 0
    assert "total_steps" in out


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["train", "CartPole-v2"], "env id 'CartPole-v2'"),
        (["train", "Pendulum-v1"], "allowed: Discrete"),
        (["train", "CartPole-v1", "--preset", "nope"], "unknown preset 'nope'"),
        (
            ["train", "CartPole-v1", "--set", "gama=0.5"],
            "unknown key 'gama' in --set; did you mean",
        ),
        (["train", "CartPole-v1", "--set", "gamma"], "override 'gamma' is malformed"),
        (["train", "CartPole-v1", "--set", "=3"], "is malformed; expected key=value"),
        (
            ["train", "CartPole-v1", "--set", "gamma=1.5"],
            "gamma = 1.5 is out of range; allowed: [0, 1]",
        ),
        (["train", "CartPole-v1", "--set", "gamma=-0.1"], "gamma = -0.1 is out of range"),
        (
            ["train", "CartPole-v1", "--set", "gamma=high"],
            "gamma = 'high' is invalid; allowed: a number",
        ),
        (
            ["train", "CartPole-v1", "--set", "gamma=0.5\ntotal_steps=5"],
            "gamma = '0.5\\ntotal_steps=5' is",
        ),
        (
            ["train", "CartPole-v1", "--set", "hidden_sizes=[0]"],
            "hidden_sizes entry = 0 is out of range",
        ),
        (
            ["train", "CartPole-v1", "--set", "torch_threads=1000000"],
            "torch_threads = 1000000 is out of range",
        ),
        (["train", "CartPole-v1", "--steps", "0"], "total_steps = 0 is out of range"),
        (["train", "CartPole-v1", "--set", "buffer_size=1000000000000"], "GiB but only"),
        (["train"], "give an env id"),
        (["train", "--resume", "nowhere"], "has no complete checkpoint to resume from"),
        (["train", "CartPole-v1", "--resume", "nowhere"], "--resume continues the run"),
        (
            ["train", "--resume", "nowhere", "--steps", "5"],
            "drop ENV/--preset/--config/--set/--steps",
        ),
        (["eval", "nowhere"], "checkpoint 'nowhere' does not exist"),
        (["play", "nowhere", "--gif", "x.gif"], "checkpoint 'nowhere' does not exist"),
        (["plot", "."], "has no episodes.csv or evals.csv to plot"),
        (["presets", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_gives_one_error_line(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args + (["--no-progress"] if args[0] == "train" else []), capsys)
    assert_one_error_line(code, err, message)
    assert not list(tmp_path.iterdir())  # nothing written (no default run dir either)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a missing device")
def test_unavailable_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "train",
        "CartPole-v1",
        "--set",
        "device=cuda",
        "--run-dir",
        tmp_path / "r",
        "--no-progress",
    ]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, "device = 'cuda' is not usable here")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gama = 0.5\n", "unknown key 'gama' in config file"),
        ('gamma = "high"\n', "gamma = 'high' is invalid; allowed: a number"),
        ("total_steps = 1.5\n", "total_steps = 1.5 is invalid; allowed: an integer"),
        ("hidden_sizes = 64\n", "hidden_sizes = 64 is invalid; allowed: a list of integers"),
        ("[network]\nkind = 'mlp'\n", "network = {'kind': 'mlp'} is invalid"),
        ("gamma = \n", "is not valid TOML"),
        ("gamma = 0.5\ngamma = 0.6\n", "is not valid TOML"),
    ],
)
def test_bad_config_file(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    args = [
        "train",
        "CartPole-v1",
        "--config",
        config,
        "--run-dir",
        tmp_path / "r",
        "--no-progress",
    ]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, message)
    assert not (tmp_path / "r").exists()


def test_missing_and_unreadable_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    for config, message in [
        (tmp_path / "none.toml", "does not exist"),
        (tmp_path, "is a directory"),
        (tmp_path / "file" / "c.toml", "cannot be read (Not a directory)"),
    ]:
        code, _, err = run_cli(["train", "CartPole-v1", "--config", config], capsys)
        assert_one_error_line(code, err, message)


def test_run_dir_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    args = ["train", "CartPole-v1", "--run-dir", tmp_path / "file" / "run", "--no-progress"]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(code, err, "is not writable (Not a directory); choose another")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "is truncated or altered"),
        ("flip", "is corrupt: SHA-256 mismatch"),
        ("remove", "is missing"),
        ("json", "is malformed JSON"),
        ("foreign", "is not a qlearn checkpoint"),
        ("version", "newer than this qlearn reads"),
    ],
)
def test_eval_of_a_damaged_checkpoint(
    damage: str, message: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = shutil.copytree(run_dir / "final", tmp_path / "bad")
    model, meta = bad / checkpoint.MODEL, bad / checkpoint.META
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(model.read_bytes())
        data[-1] ^= 1
        model.write_bytes(bytes(data))
    elif damage == "remove":
        model.unlink()
    elif damage == "json":
        meta.write_text(meta.read_text()[:50])
    elif damage == "foreign":
        meta.write_text(json.dumps({"architectures": ["BertModel"]}))
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
    for command in (["eval", bad], ["play", bad, "--gif", tmp_path / "x.gif"]):
        code, _, err = run_cli(command, capsys)
        assert_one_error_line(code, err, message)


def test_eval_of_a_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")
    code, _, err = run_cli(["eval", tmp_path / "model.pt"], capsys)
    assert_one_error_line(code, err, "qlearn never loads pickled files")


def test_errors_through_the_real_command(run_dir: Path, tmp_path: Path) -> None:
    """The installed `qlearn` script, in separate processes: one error line, exit 2."""
    script = Path(sys.executable).with_name("qlearn")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from qlearn.cli import main; main()"]
    )
    bad = shutil.copytree(run_dir / "final", tmp_path / "bad")
    (bad / checkpoint.MODEL).write_bytes(b"\x00" * 10)
    cases = {
        "allowed: Discrete": ["train", "Pendulum-v1", "--no-progress"],
        "is truncated or altered": ["eval", str(bad)],
    }
    procs = {
        message: subprocess.Popen(
            command + args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for message, args in cases.items()
    }
    for message, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert_one_error_line(proc.returncode, err, message)
