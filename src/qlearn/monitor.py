"""Training logs behind one small interface: CSV always, TensorBoard optionally, progress.

Each CSV file is created atomically with its header, then appended row by row and flushed, so a
crash leaves it absent, with a complete header, or at worst with its last row cut off. On resume
`truncate_after(step)` rewrites each file atomically without the rows past the checkpoint (and
without a cut-off row), so a resumed run continues with no duplicated and no missing rows.
`read_log` is the one reader of what a crash may leave.

Progress goes only where the caller says (`ProgressOutput`, which the CLI makes for stderr): a
bar redrawn in place on a terminal, or, when the stream is a file or a pipe, a plain status line
at every tenth of the run and at least once a minute, so a log gets a few readable lines instead
of thousands of carriage-return frames.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

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


class Progress(Protocol):
    """Reports how far a run has got: `update` takes the count done so far and figures to show
    beside it, by name."""

    def update(self, done: int, postfix: Mapping[str, float] | None = None) -> None: ...

    def close(self) -> None: ...


class ProgressBar:
    """A tqdm bar redrawn in place on `stream`: for a terminal."""

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        initial: int = 0,
        unit: str = "step",
        leave: bool = True,
    ) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            file=stream,
            dynamic_ncols=True,
            smoothing=0.05,
            leave=leave,
        )
        self._done = initial

    def update(self, done: int, postfix: Mapping[str, float] | None = None) -> None:
        if postfix:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        self._bar.close()


class ProgressLines:
    """One plain status line at every `fraction` of `total` and at least every `interval_s`
    seconds, e.g. `step 2,000/20,000 (10%), 5,120 steps/s, 0:00:04 elapsed, loss 0.0123`: for a
    log file or a pipe, where a redrawn bar would write a frame per refresh.

    Args:
        stream: where the lines go.
        total: the count at which the run is done.
        initial: the count already done (a resumed run).
        unit: what is counted, singular ("step", "episode").
        fraction: a line each time the count crosses a multiple of this share of `total`.
        interval_s: a line when this long has passed since the last one, whatever the count.
        clock: seconds, monotonic; replaceable for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        initial: int = 0,
        unit: str = "step",
        fraction: float = 0.1,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.total, self.unit = stream, total, unit
        self.every = max(1.0, fraction * total)
        self.interval_s = interval_s
        self.clock = clock
        self.start = self.last_time = clock()
        self.last_done = initial

    def update(self, done: int, postfix: Mapping[str, float] | None = None) -> None:
        now = self.clock()
        crossed = math.floor(done / self.every) > math.floor(self.last_done / self.every)
        finished = done >= self.total > self.last_done
        if not (crossed or finished or now - self.last_time >= self.interval_s):
            return
        rate = (done - self.last_done) / max(now - self.last_time, 1e-9)
        minutes, seconds = divmod(int(now - self.start), 60)
        elapsed = f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
        percent = 100 * done / self.total
        parts = [
            f"{self.unit} {done:,}/{self.total:,} ({percent:.0f}%)",
            f"{rate:,.0f} {self.unit}s/s",
            f"{elapsed} elapsed",
            *(f"{k} {v:.3g}" for k, v in (postfix or {}).items()),
        ]
        print(", ".join(parts), file=self.stream, flush=True)
        self.last_done, self.last_time = done, now

    def close(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class ProgressOutput:
    """Where progress goes and in which form; the caller decides, the library never prints
    unless given one.

    Args:
        stream: the text stream to write to (the CLI passes stderr).
        bar: True draws a bar redrawn in place (for a terminal); False prints status lines.
    """

    stream: TextIO
    bar: bool

    @classmethod
    def to(cls, stream: TextIO) -> ProgressOutput:
        """A bar if `stream` is a terminal, else status lines."""
        try:
            bar = bool(stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            bar = False
        return cls(stream, bar)

    def start(
        self, total: int, *, initial: int = 0, unit: str = "step", leave: bool = True
    ) -> Progress:
        """A Progress for a run of `total` units, `initial` of them already done."""
        if self.bar:
            return ProgressBar(self.stream, total, initial=initial, unit=unit, leave=leave)
        return ProgressLines(self.stream, total, initial=initial, unit=unit)


def progress_output(progress: bool | ProgressOutput | None) -> ProgressOutput | None:
    """`progress` as given to `DQN`: True means stderr (a bar on a terminal, else lines)."""
    if progress is True:
        return ProgressOutput.to(sys.stderr)
    return progress or None


class Monitor:
    """Where training reports: CSV files in `run_dir`, TensorBoard, and a tqdm progress bar.

    Args:
        run_dir: folder for the CSV files; None keeps nothing on disk.
        total_steps: the run's length, for progress.
        progress: where to report progress (see ProgressOutput); None reports none.
        tensorboard: also write TensorBoard events under run_dir/tb.
        initial_step: where a resumed run starts.
    """

    def __init__(
        self,
        run_dir: Path | None,
        total_steps: int,
        *,
        progress: ProgressOutput | None = None,
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
        self.bar = progress.start(total_steps, initial=initial_step) if progress else None

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

    def progress(self, step: int, postfix: Mapping[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(step, postfix)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
