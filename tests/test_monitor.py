"""Progress reporting: a bar on a terminal, a few plain status lines in a log, nothing unasked.

`qlearn tabular CliffWalking-v1 > log 2>&1` used to fill the log with thousands of
carriage-return frames of the tqdm bar.
"""

from __future__ import annotations

import io

import pytest

from qlearn.config import DQNConfig
from qlearn.monitor import ProgressBar, ProgressLines, ProgressOutput, progress_output
from qlearn.train import DQN


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
