"""Training logs behind one small interface: CSV always, TensorBoard optionally, a progress bar.

CSV files are appended row by row and flushed; on resume `truncate_after(step)` rewrites each
file atomically without the rows past the checkpoint, so a resumed run continues with no
duplicated and no missing rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from qlearn.checkpoint import atomic_write_text

EPISODES_CSV = "episodes.csv"
TRAIN_CSV = "train.csv"
EVALS_CSV = "evals.csv"


class CSVLog:
    """An append-only CSV file whose columns are fixed by its first row (or an existing header)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._writer: csv.DictWriter[str] | None = None
        self.columns: list[str] | None = None
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def write(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            fresh = self.columns is None
            if self.columns is None:
                self.columns = list(row)
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.DictWriter(self._file, self.columns, extrasaction="ignore")
            if fresh:
                self._writer.writeheader()
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        assert self._file is not None
        self._file.flush()

    def truncate_after(self, step: int) -> None:
        """Keep the header and the complete rows with `step <= step`; drop a torn last line."""
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # a row cut off by a crash
        if not lines:
            self.path.unlink()
            self.columns = None
            return
        out = io.StringIO()
        out.write(lines[0])
        reader = csv.DictReader(lines)
        writer = csv.DictWriter(out, reader.fieldnames or [], lineterminator="\n")
        for row in reader:
            try:
                if int(float(row["step"])) <= step:
                    writer.writerow(row)
            except (KeyError, TypeError, ValueError):
                continue
        atomic_write_text(self.path, out.getvalue())

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
