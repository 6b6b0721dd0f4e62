"""Update engines: the protocol, exact state round trips, and checkpoints from before it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qlearn import DQN

DATA = Path(__file__).parent.parent / "data"


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_checkpoint_from_before_the_engine_redesign_loads_and_continues(name: str) -> None:
    # Written by the code before the UpdateEngine protocol (see tests/data/README.md): the
    # weights, Adam moments and replay load, act as they did, and two more updates give the
    # very tensors that code gave.
    folder = DATA / f"pre_engine_{name}"
    model = DQN.load(folder / "checkpoint", with_replay=True)
    learner = model.learner
    expected = json.loads((folder / "expected.json").read_text())
    obs = np.asarray(expected["obs"], dtype=np.float32)
    np.testing.assert_array_equal(
        learner.q_values(obs), np.asarray(expected["q_values"], dtype=np.float32)
    )
    learner.update(2, beta=0.5)
    after = load_file(folder / "after_2_updates.safetensors")
    actual = learner.tensors()
    assert set(actual) == set(after)
    for key, value in after.items():
        assert torch.equal(actual[key], value), key
