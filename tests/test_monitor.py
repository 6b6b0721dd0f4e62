"""The monitor: CSV logs as a crash may leave them, and progress reporting.

CSV logs are created with their header in one step and read back on resume (`read_log`,
`CSVLog.truncate_after`) whether empty, a header only, or cut off mid-row. Progress is a bar on a
terminal, a few plain status lines in a log, and nothing unasked: `qlearn tabular CliffWalking-v1
> log 2>&1` used to fill the log with thousands of carriage-return frames of the tqdm bar.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest

from qlearn import monitor
from qlearn.config import DQNConfig
from qlearn.errors import TrainingError
from qlearn.monitor import (
    CSVLog,
    Monitor,
    ProgressBar,
    ProgressLines,
    ProgressOutput,
    progress_output,
    read_log,
)
from qlearn.train import DQN


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def test_a_crash_right_after_a_log_is_created_leaves_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies as soon as the file is opened for appending its first row: the file
    already holds its complete header (it is never seen empty)."""
    real_open = open

    def open_then_die(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if "a" in mode:
            handle.close()
            raise Killed
        return handle

    monkeypatch.setattr(monitor, "open", open_then_die, raising=False)
    path = tmp_path / "train.csv"
    with pytest.raises(Killed):
        CSVLog(path).write({"step": 1_000, "loss": 0.5})
    assert path.read_text(encoding="utf-8") == "step,loss\n"


@pytest.mark.parametrize(
    ("text", "header", "rows"),
    [
        (None, None, []),  # never created
        ("", None, []),  # created, nothing written
        ("step,lo", None, []),  # header cut off
        ("step,loss\n", ["step", "loss"], []),
        ("step,loss\n1,0.5\n2,0.", ["step", "loss"], [["1", "0.5"]]),  # last row cut off
        ("step,loss\n1,0.5\n2,0.25\n", ["step", "loss"], [["1", "0.5"], ["2", "0.25"]]),
    ],
)
def test_read_log_accepts_what_a_crash_leaves(
    tmp_path: Path, text: str | None, header: list[str] | None, rows: list[list[str]]
) -> None:
    path = tmp_path / "log.csv"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    assert read_log(path) == (header, rows)


@pytest.mark.parametrize("text", ["", "step,lo", "step,loss\n", "step,loss\n7,0.5\n"])
def test_a_log_left_without_rows_is_created_again_with_the_new_header(
    tmp_path: Path, text: str
) -> None:
    """Empty, a cut-off header, a header only, or only rows past the resume step: the file is
    removed, and the next row creates it with that row's columns."""
    path = tmp_path / "log.csv"
    path.write_text(text, encoding="utf-8")
    log = CSVLog(path)
    log.truncate_after(5)
    assert not path.exists()
    log.write({"step": 6, "return": 1.5})
    log.close()
    assert path.read_text(encoding="utf-8") == "step,return\n6,1.5\n"


def test_truncate_drops_a_cut_off_row_and_later_rows_then_appends(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n1,0.5\n2,0.25\n3,0.125\n4,0.0", encoding="utf-8")
    log = CSVLog(path)
    log.truncate_after(2)
    assert path.read_text(encoding="utf-8") == "step,loss\n1,0.5\n2,0.25\n"
    log.write({"step": 3, "loss": 0.75, "extra": 9.0})  # columns stay the file's
    log.close()
    assert path.read_text(encoding="utf-8") == "step,loss\n1,0.5\n2,0.25\n3,0.75\n"


def test_a_log_without_a_step_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(TrainingError, match=r"log .*log\.csv' has no 'step' column .*move it"):
        CSVLog(path)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_every_tenth() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLines(stream, 1_000, clock=clock)
    for done in range(7, 1_001, 7):  # a count that never lands on the tenths exactly
        clock.now += 0.07  # 100 units a second
        progress.update(done, {"loss": 0.5})
    progress.update(1_000, {"loss": 0.25})
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # the first update past each multiple of 100, then the end
    firsts = [7 * -(-100 * k // 7) for k in range(1, 10)]
    assert [line.split(" (")[0] for line in lines] == [
        *(f"step {n}/1,000" for n in firsts),
        "step 1,000/1,000",
    ]
    assert lines[0] == "step 105/1,000 (10%), 100 steps/s, 0:00:01 elapsed, loss 0.5"
    assert lines[-1].startswith("step 1,000/1,000 (100%), ")
    assert lines[-1].endswith(", loss 0.25")


def test_a_line_after_the_interval_even_without_a_tenth() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLines(stream, 1_000_000, unit="episode", interval_s=60.0, clock=clock)
    clock.now = 59.0
    progress.update(10)
    assert stream.getvalue() == ""
    clock.now = 60.0
    progress.update(20)
    clock.now = 61.0
    progress.update(30)  # one second after the last line: nothing
    assert stream.getvalue() == "episode 20/1,000,000 (0%), 0 episodes/s, 0:01:00 elapsed\n"


def test_resumed_run_counts_from_where_it_was() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLines(stream, 100, initial=50, clock=clock)
    progress.update(55)
    assert stream.getvalue() == ""
    clock.now = 2.0
    progress.update(60)
    assert stream.getvalue().startswith("step 60/100 (60%), 5 steps/s, 0:00:02 elapsed")


def test_the_stream_decides_bar_or_lines() -> None:
    assert isinstance(ProgressOutput.to(Terminal()).start(10), ProgressBar)
    assert isinstance(ProgressOutput.to(io.StringIO()).start(10), ProgressLines)
    assert progress_output(False) is None and progress_output(None) is None


def test_bar_draws_frames_on_a_terminal() -> None:
    stream = Terminal()
    bar = ProgressOutput.to(stream).start(100)
    for done in range(10, 101, 10):
        bar.update(done, {"loss": 0.1})
    bar.close()
    assert "\r" in stream.getvalue()
    assert "100/100" in stream.getvalue() and "loss=0.1" in stream.getvalue()


@pytest.mark.parametrize("bar", [False, True])
def test_dqn_writes_progress_only_where_told(bar: bool, capsys: pytest.CaptureFixture[str]) -> None:
    stream = Terminal() if bar else io.StringIO()
    config = DQNConfig(
        total_steps=2_000, hidden_sizes=(8,), buffer_size=500, learning_starts=100, eval_interval=0
    )
    DQN("CartPole-v1", config, progress=ProgressOutput(stream, bar)).learn()
    text = stream.getvalue()
    if bar:
        assert "\r" in text and "2000/2000" in text
    else:
        assert text.splitlines()[-1].startswith("step 2,000/2,000 (100%), ")
        assert "\r" not in text
    assert capsys.readouterr() == ("", "")  # the library printed nothing itself
    DQN("CartPole-v1", config.replace(total_steps=1_000)).learn()
    assert capsys.readouterr() == ("", "")  # no progress asked, none shown


# ------------------------------------------------------------------ Monitor: CSV and TensorBoard


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()]


def test_monitor_writes_each_log_with_its_columns(tmp_path: Path) -> None:
    log = Monitor(tmp_path, 100)
    log.episode(10, 0, 12.5, 10, epsilon=0.75)
    log.episode(25, 1, -3.0, 15, epsilon=0.5)
    log.scalars(20, {"loss": 0.125, "q_mean": 1 / 3})
    log.evaluation(50, {"mean_return": 200.0, "std_return": 0.0})
    log.close()
    assert _rows(tmp_path / "episodes.csv") == [
        ["step", "episode", "return", "length", "epsilon"],
        ["10", "0", "12.5", "10", "0.75"],
        ["25", "1", "-3", "15", "0.5"],
    ]
    # floats keep 6 significant digits
    assert _rows(tmp_path / "train.csv") == [
        ["step", "loss", "q_mean"],
        ["20", "0.125", "0.333333"],
    ]
    assert _rows(tmp_path / "evals.csv") == [
        ["step", "mean_return", "std_return"],
        ["50", "200", "0"],
    ]
    assert not (tmp_path / "tb").exists()  # TensorBoard only when asked


def test_monitor_without_a_run_dir_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = Monitor(None, 100, tensorboard=True)  # nowhere to write events either
    log.episode(10, 0, 1.0, 10)
    log.scalars(10, {"loss": 1.0})
    log.evaluation(10, {"mean_return": 1.0})
    log.progress(10)
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_non_finite_values_are_written_by_name(tmp_path: Path) -> None:
    log = Monitor(tmp_path, 100)
    log.scalars(1, {"loss": math.nan, "grad_norm": math.inf})
    log.close()
    assert _rows(tmp_path / "train.csv")[1] == ["1", "nan", "inf"]


def test_resumed_monitor_continues_each_log_without_duplicates(tmp_path: Path) -> None:
    """A run checkpointed at step 30 and killed at 50: resuming from 30 drops the rows past it
    in all three logs, and rows from the resumed run follow."""
    log = Monitor(tmp_path, 100)
    for step in (10, 20, 30, 40, 50):
        log.episode(step, step // 10, float(step), 10)
        log.scalars(step, {"loss": step / 100})
        log.evaluation(step, {"mean_return": float(step)})
    log.close()
    resumed = Monitor(tmp_path, 100, initial_step=30)
    resumed.episode(40, 4, -1.0, 10)
    resumed.scalars(40, {"loss": -1.0})
    resumed.evaluation(40, {"mean_return": -1.0})
    resumed.close()
    assert [r[2] for r in _rows(tmp_path / "episodes.csv")] == ["return", "10", "20", "30", "-1"]
    assert _rows(tmp_path / "train.csv")[1:] == [
        ["10", "0.1"],
        ["20", "0.2"],
        ["30", "0.3"],
        ["40", "-1"],
    ]
    assert [r[0] for r in _rows(tmp_path / "evals.csv")] == ["step", "10", "20", "30", "40"]


def test_monitor_writes_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = Monitor(tmp_path, 100, tensorboard=True)
    log.episode(10, 0, 12.5, 10)
    log.episode(25, 1, -3.0, 15)
    log.scalars(20, {"loss": 0.125})
    log.evaluation(50, {"mean_return": 200.0})
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {
        "episode/return",
        "episode/length",
        "train/loss",
        "eval/mean_return",
    }

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert scalars("episode/return") == [(10, 12.5), (25, -3.0)]
    assert scalars("episode/length") == [(10, 10.0), (25, 15.0)]
    assert scalars("train/loss") == [(20, 0.125)]
    assert scalars("eval/mean_return") == [(50, 200.0)]
    assert (tmp_path / "episodes.csv").exists()  # CSV too, not instead


def test_monitor_reports_progress_where_told() -> None:
    stream = io.StringIO()
    log = Monitor(None, 100, progress=ProgressOutput(stream, bar=False), initial_step=50)
    log.progress(60, {"loss": 0.5})
    log.progress(100, {"loss": 0.25})
    log.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["step 60/100 (60%)", "step 100/100 (100%)"]
    assert lines[-1].endswith(", loss 0.25")
