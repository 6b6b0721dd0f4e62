"""Building, loading and training a DQN leave the process as they found it: torch's global
generator, its thread count and the CPU's denormal flag belong to the caller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from qlearn import DQN, DQNConfig
from qlearn.train.process import flushing_denormals

CFG = DQNConfig(
    total_steps=300,
    learning_starts=100,
    batch_size=16,
    eval_interval=150,
    eval_episodes=1,
    hidden_sizes=(16, 16),
    torch_threads=1,
)


def process_state() -> tuple[bytes, int, bool]:
    return bytes(torch.get_rng_state().numpy()), torch.get_num_threads(), flushing_denormals()


@pytest.fixture(params=[False, True], ids=["flush_off", "flush_on"])
def caller_state(request: pytest.FixtureRequest) -> Iterator[tuple[bytes, int, bool]]:
    """The caller's settings, each unlike what training uses (2 threads against 1, and the
    denormal flag either way), put back after the test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.set_flush_denormal(request.param)
    torch.manual_seed(1234)
    try:
        yield process_state()
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def test_the_denormal_probe_reads_the_flag() -> None:
    assert torch.set_flush_denormal(True)  # False where the CPU cannot flush: nothing to test
    try:
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
    assert not flushing_denormals()


@pytest.mark.parametrize("flags", [{}, {"noisy": True}], ids=["numpy_engine", "noisy"])
def test_construct_learn_save_load_leave_the_process_alone(
    flags: dict, caller_state: tuple[bytes, int, bool], tmp_path: Path
) -> None:
    agent = DQN("CartPole-v1", CFG.replace(**flags))
    assert process_state() == caller_state
    agent.learn()
    assert process_state() == caller_state
    loaded = DQN.load(agent.save(tmp_path / "model"))
    assert process_state() == caller_state
    loaded.learn(50)
    loaded.evaluate(1)
    assert process_state() == caller_state


def test_the_agent_does_not_depend_on_the_global_generator() -> None:
    """Weights and noise come from the config's seed alone, whatever the global state."""
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        agent = DQN("CartPole-v1", CFG.replace(noisy=True))
        agent.learn()
        runs.append(agent.learner.tensors())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
