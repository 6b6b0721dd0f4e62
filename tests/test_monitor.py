"""CSV logs as a crash may leave them: created with their header in one step, and read back on
resume (`read_log`, `CSVLog.truncate_after`) whether empty, a header only, or cut off mid-row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qlearn import monitor
from qlearn.errors import TrainingError
from qlearn.monitor import CSVLog, read_log


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
