"""`qlearn train/eval/play/plot/presets`: the happy path writes what it says, and every bad
input ends with exactly one `error:` line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
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
        # Issue #11: each used to end in a traceback, or to run on regardless.
        (
            ["train", "CartPole-v1", "--set", "batch_size=1000000000000"],
            "batch_size = 1000000000000 is larger than buffer_size = 100000; allowed: at most "
            "buffer_size",
        ),
        (
            [
                "train",
                "CartPole-v1",
                "--set",
                "batch_size=1000000000000",
                "--set",
                "buffer_size=1000000000000",
            ],
            "error: one update (batch_size = 1000000000000: sampled transitions and activations) "
            "needs ",
        ),
        (
            ["train", "CartPole-v1", "--set", "hidden_sizes=[1000000000000]"],
            "error: a network of 7,000,000,000,002 parameters (online and target copies, "
            "gradient, Adam moments) needs 156462.19 GiB but only ",
        ),
        (
            ["train", "CartPole-v1", "--steps", "200", "--set", "num_envs=1000000"],
            "num_envs = 1000000 is out of range; allowed: [1, 200] (at most total_steps = 200",
        ),
        (
            ["train", "CartPole-v1", "--set", "num_envs=5000"],
            "num_envs = 5000 is out of range; allowed: [1, 4096] (at most MAX_NUM_ENVS = 4096",
        ),
        (
            ["train", "CartPole-v1", "--set", "hidden_sizes=[64, 64"],
            "hidden_sizes = '[64, 64' is invalid; allowed: a list of integers",
        ),
        (["eval", "nowhere", "--seed", "-1"], "--seed = -1 is out of range; allowed: [0, inf]"),
        (
            ["play", "nowhere", "--gif", "x.gif", "--seed", "-1"],
            "--seed = -1 is out of range; allowed: [0, inf]",
        ),
        (
            ["play", "nowhere", "--gif", "out.txt"],
            "--gif 'out.txt' is not a .gif file; allowed: a path ending in .gif",
        ),
        (
            ["plot", ".", "--out", "x.txt"],
            "--out 'x.txt' is not a .png, .svg or .pdf file; allowed: a path ending in .png, "
            ".svg or .pdf",
        ),
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


# ---------------------------------------------------------------------- issue #11: bad paths


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["play", "RUN", "--gif", "adir"], "--gif 'adir' is a directory; allowed: a file path"),
        (["play", "RUN", "--gif", "afile/x.gif"], "--gif 'afile/x.gif' cannot be written: "),
        (["play", "RUN", "--seed", "-1", "--gif", "x.gif"], "--seed = -1 is out of range"),
        (["plot", "RUN", "--out", "x.txt"], "--out 'x.txt' is not a .png, .svg or .pdf file"),
        (["plot", "RUN", "--out", "afile/x.png"], "--out 'afile/x.png' cannot be written: "),
        (["plot", "RUN", "--out", "adir"], "--out 'adir' is a directory; allowed: a file path"),
        (["eval", "RUN", "--seed", "-1"], "--seed = -1 is out of range; allowed: [0, inf]"),
    ],
)
def test_bad_output_path_or_seed_of_a_real_run(
    args: list[str],
    message: str,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """These used to end in PIL's or matplotlib's ValueError, a FileExistsError, gymnasium's
    seed error, or (`--out DIR`) "wrote DIR" while the PNG went to DIR.png."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("a file")
    before, run_before = _listing(tmp_path), _listing(run_dir)
    code, out, err = run_cli([run_dir if a == "RUN" else a for a in args], capsys)
    assert_one_error_line(code, err, message)
    assert out == ""
    assert _listing(tmp_path) == before  # nothing written, not even adir.png
    assert _listing(run_dir) == run_before


@pytest.mark.parametrize("name", ["curve.svg", "sub/curve.pdf", "CURVE.PNG"])
def test_plot_says_the_path_it_wrote(
    name: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / name
    code, out, err = run_cli(["plot", run_dir, "--out", out_path], capsys)
    assert code == 0, err
    assert out == f"wrote {out_path}\n"
    magic = {".svg": b"<?xml", ".pdf": b"%PDF", ".png": b"\x89PNG"}[out_path.suffix.lower()]
    assert out_path.read_bytes().startswith(magic)
    assert [p.name for p in out_path.parent.iterdir()] == [out_path.name]  # no temporary left


@pytest.mark.parametrize(
    ("episodes_csv", "message"),
    [
        ("episode,return\n1,2\n", "log '{log}' has no 'step' column (its header: episode, return)"),
        ("step,return\n10,1.5\n20,abc\n", "log '{log}' line 3: return = 'abc' is not a number"),
        ("step,return\n10\n", "log '{log}' line 2: return = '' is not a number"),
        ("", "log '{log}' is empty; expected a header row with step, return"),
        (b"step,return\n\xff\xfe,1\n", "log '{log}' cannot be read as CSV"),
    ],
)
def test_plot_of_malformed_logs(
    episodes_csv: str | bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log without a step column used to raise KeyError: 'step'; a text cell, ValueError."""
    log = tmp_path / "episodes.csv"
    if isinstance(episodes_csv, bytes):
        log.write_bytes(episodes_csv)
    else:
        log.write_text(episodes_csv)
    code, _, err = run_cli(["plot", tmp_path], capsys)
    assert_one_error_line(code, err, message.format(log=log))
    assert _listing(tmp_path) == ["episodes.csv"]


def test_plot_of_logs_with_only_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "episodes.csv").write_text("step,return\n")
    code, _, err = run_cli(["plot", tmp_path], capsys)
    assert_one_error_line(code, err, "has no rows to plot in episodes.csv or evals.csv")


# ---------------------------------------------------------------------- issue #11: checkpoints


@pytest.fixture
def run_asking_for_a_huge_network(tmp_path: Path) -> Path:
    """A run with periodic checkpoints whose meta.json all ask for hidden_sizes [1e6, 1e6]."""
    from qlearn.config import DQNConfig
    from qlearn.train import DQN

    config = DQNConfig(
        total_steps=300,
        hidden_sizes=(16,),
        buffer_size=500,
        batch_size=8,
        learning_starts=50,
        eval_interval=100,
        eval_episodes=1,
        checkpoint_interval=150,
    )
    run = tmp_path / "run"
    DQN("CartPole-v1", config, run_dir=run).learn()
    for ckpt in [run / "best", run / "final", *checkpoint.checkpoint_dirs(run)]:
        meta = json.loads((ckpt / checkpoint.META).read_text())
        meta["config"]["hidden_sizes"] = [1_000_000, 1_000_000]
        (ckpt / checkpoint.META).write_text(json.dumps(meta))
    return run


@pytest.mark.parametrize("command", ["eval", "resume", "play"])
def test_checkpoint_asking_for_a_huge_network(
    command: str, run_asking_for_a_huge_network: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Used to build a trillion-parameter network and die in the allocator."""
    run = run_asking_for_a_huge_network
    before = _listing(run)
    args = {
        "eval": ["eval", run],
        "resume": ["train", "--resume", run, "--no-progress"],
        "play": ["play", run, "--gif", run.parent / "x.gif"],
    }[command]
    code, _, err = run_cli(args, capsys)
    assert_one_error_line(
        code,
        err,
        "does not fit the network its config describes (hidden_sizes [1000000, 1000000], "
        "observations Box(4,) float32, actions Discrete(2)): q_net.body.0.weight has shape "
        "(16, 4) where the network needs (1000000, 4)",
    )
    assert _listing(run) == before
    assert not (run.parent / "x.gif").exists()


# ---------------------------------------------------------------------- progress and success


def test_progress_in_a_log_is_a_few_plain_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stderr is not a terminal here (as in `qlearn train ... > log 2>&1`): a status line per
    logged tenth, no carriage-return frames."""
    args = ["train", "CartPole-v1", "--steps", "2000", "--run-dir", tmp_path / "r", *TRAIN_SETTINGS]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "step 1",  # "step 1,000/2,000 (50%)" split at the thousands comma
        "step 2",
    ]
    assert lines[0].startswith("step 1,000/2,000 (50%), ")
    assert lines[1].startswith("step 2,000/2,000 (100%), ")
    assert "return (last 20) " in lines[1] and "epsilon 0.05" in lines[1]


def test_progress_on_a_terminal_is_a_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["train", "CartPole-v1", "--steps", "2000", "--run-dir", tmp_path / "r", *TRAIN_SETTINGS]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "\r" in err and "2000/2000 [" in err
    assert "step 2,000/2,000" not in err


def test_no_success_rate_where_the_env_has_no_goal(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CartPole has no goal: "return > 0" used to report a success rate of 1.000 for it."""
    code, out, err = run_cli(["eval", run_dir, "--episodes", "2"], capsys)
    assert code == 0, err
    assert "success" not in out
    code, out, err = run_cli(["eval", run_dir, "--episodes", "2", "--json"], capsys)
    assert "success_rate" not in json.loads(out) and "goal" not in json.loads(out)
    header = (run_dir / "evals.csv").read_text().splitlines()[0].split(",")
    assert "success_rate" not in header and "mean_return" in header


def test_gif_and_plot_are_written_atomically(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails part-way leaves the old file whole and no temporary behind."""
    from PIL import Image

    from qlearn import plots

    gif, png = tmp_path / "x.gif", tmp_path / "x.png"
    gif.write_bytes(b"old gif")
    png.write_bytes(b"old png")

    def fail(self: object, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"torn")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        plots.write_gif([np.zeros((4, 4, 3), dtype=np.uint8)] * 2, gif)
    monkeypatch.setattr(plots.plt.Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        plots.learning_curve(run_dir, png)
    assert (gif.read_bytes(), png.read_bytes()) == (b"old gif", b"old png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gif", "x.png"]
