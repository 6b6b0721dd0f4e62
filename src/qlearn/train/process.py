"""Process settings a training run holds while it runs, and gives back as it found them.

Signals (SIGINT/SIGTERM become a flag the loop checks between steps), the CPU's denormal flag,
and the thread counts of torch and of numpy's BLAS.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch
from threadpoolctl import threadpool_limits


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self.signal = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def flushing_denormals() -> bool:
    """Whether this thread's CPU flushes denormal floats to zero (torch has no getter for it)."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero while training (the CPU's FTZ/DAZ flags, this thread only).

    Adam's moments of parameters whose gradient is exactly zero (dead ReLU units) decay into the
    denormal range, where each float operation takes ~100x longer: Adam on a CartPole network went
    from 35 to 120 us a step. TensorFlow sets the same flags by default. On exit they are put
    back as they were.
    """
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run torch's intra-op pool with `num_threads` threads, restoring the count on exit."""
    before = torch.get_num_threads()
    if before != num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def training_settings(stop: StopFlag, num_threads: int) -> Iterator[None]:
    """All of the above for the length of a `learn` call: `stop` catches the signals, torch and
    BLAS run `num_threads` threads, denormals are flushed."""
    # BLAS threads as many as torch's: numpy's OpenBLAS would otherwise spin a thread per core,
    # which on a busy machine makes the numpy engine's small matmuls ~30x slower.
    with (
        stop.installed(),
        torch_threads(num_threads),
        threadpool_limits(num_threads, user_api="blas"),
        flush_denormals(),
    ):
        yield
