"""Training logs behind one small interface: CSV always, TensorBoard optionally, a progress bar.

Each CSV file is created atomically with its header, then appended row by row and flushed, so a
crash leaves it absent, with a complete header, or at worst with its last row cut off. On resume
`truncate_after(step)` rewrites each file atomically without the rows past the checkpoint (and
without a cut-off row), so a resumed run continues with no duplicated and no missing rows.
`read_log` is the one reader of what a crash may leave.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from qlearn.checkpoint import atomic_write_text
from qlearn.errors import TrainingError

EPISODES_CSV = "episodes.csv"
TRAIN_CSV = "train.csv"
EVALS_CSV = "evals.csv"


def read_log(path: Path) -> tuple[list[str] | None, list[list[str]]]:
    """The header and complete rows of a CSV log, as a crash may have left it.

    A missing or empty file, or one holding only part of its header line, has no header (None)
    and no rows. A last line without its newline is a row cut off by a crash and is left out;
    so is a row with the wrong number of fields. Raises TrainingError for a header that has no
    `step` column (not a qlearn log).
    """
    if not path.exists():
        return None, []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    if not lines:
        return None, []
    header, *rows = csv.reader(lines)
    if "step" not in header:
        raise TrainingError(
            f"log {str(path)!r} has no 'step' column in its header {header!r}; it is not a qlearn "
            "log: move it away"
        )
    return header, [row for row in rows if len(row) == len(header)]


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


class CSVLog:
    """An append-only CSV file whose columns are fixed by its first row (or an existing header)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._writer: csv.DictWriter[str] | None = None
        self.columns, _ = read_log(path)

    def write(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            if self.columns is None:
                # Header and file appear together (atomic rename): a crash right after creating
                # the file cannot leave it empty or with a partial header.
                self.columns = list(row)
                atomic_write_text(self.path, _csv_line(self.columns))
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.DictWriter(
                self._file, self.columns, extrasaction="ignore", lineterminator="\n"
            )
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        assert self._file is not None
        self._file.flush()

    def truncate_after(self, step: int) -> None:
        """Keep the complete rows with `step <= step`, rewriting the file atomically.

        A file left with no rows (empty, a header only, or only later rows) is removed, and the
        next row creates it again with its header.
        """
        header, rows = read_log(self.path)
        kept = []
        if header is not None:
            index = header.index("step")
            for row in rows:
                try:
                    if int(float(row[index])) <= step:
                        kept.append(row)
                except ValueError:
                    continue
        if not kept:
            self.path.unlink(missing_ok=True)
            self.columns = None
            return
        assert header is not None
        atomic_write_text(self.path, "".join(_csv_line(r) for r in [header, *kept]))
        self.columns = header

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


class Monitor:
    """Where training reports: CSV files in `run_dir`, TensorBoard, and a tqdm progress bar.

    Args:
        run_dir: folder for the CSV files; None keeps nothing on disk.
        total_steps: for the progress bar.
        progress: draw a progress bar on stderr.
        tensorboard: also write TensorBoard events under run_dir/tb.
        initial_step: where a resumed run starts.
    """

    def __init__(
        self,
        run_dir: Path | None,
        total_steps: int,
        *,
        progress: bool = False,
        tensorboard: bool = False,
        initial_step: int = 0,
    ) -> None:
        self.run_dir = run_dir
        self.logs: dict[str, CSVLog] = {}
        if run_dir is not None:
            for name in (EPISODES_CSV, TRAIN_CSV, EVALS_CSV):
                self.logs[name] = CSVLog(run_dir / name)
                self.logs[name].truncate_after(initial_step)
        self.tb = None
        if tensorboard and run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is an optional extra
                from qlearn.errors import ConfigError

                raise ConfigError(
                    "tensorboard = true needs the tensorboard package; install qlearn[tensorboard]"
                ) from None
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=initial_step or None)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=initial_step,
                unit="step",
                dynamic_ncols=True,
                smoothing=0.05,
            )
        self._bar_step = initial_step

    def episode(self, step: int, episode: int, ret: float, length: int, **extra: float) -> None:
        if EPISODES_CSV in self.logs:
            row = {"step": step, "episode": episode, "return": ret, "length": length, **extra}
            self.logs[EPISODES_CSV].write(row)
        if self.tb is not None:
            self.tb.add_scalar("episode/return", ret, step)
            self.tb.add_scalar("episode/length", length, step)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if TRAIN_CSV in self.logs:
            self.logs[TRAIN_CSV].write({"step": step, **values})
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"train/{key}", value, step)

    def evaluation(self, step: int, values: Mapping[str, float]) -> None:
        if EVALS_CSV in self.logs:
            self.logs[EVALS_CSV].write({"step": step, **values})
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"eval/{key}", value, step)

    def progress(self, step: int, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self._bar_step)
            self._bar_step = step
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
