"""The schedules against hand values, and `num_crossings` against counting multiples one by one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qlearn.config import DQNConfig
from qlearn.schedules import epsilon, num_crossings, per_beta

LINE = DQNConfig(
    total_steps=1000,
    learning_starts=0,
    epsilon_start=1.0,
    epsilon_end=0.1,
    exploration_fraction=0.5,
)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (250, 0.55), (499, 1.0 - 0.9 * 499 / 500), (500, 0.1), (900, 0.1), (10**6, 0.1)],
)
def test_epsilon_falls_linearly_to_its_end_at_the_planned_fraction(
    step: int, expected: float
) -> None:
    assert epsilon(LINE, step) == pytest.approx(expected)


@pytest.mark.parametrize(
    "flags", [{}, {"noisy": True}, {"exploration": "softmax"}], ids=["plain", "noisy", "softmax"]
)
def test_epsilon_is_one_until_learning_starts_whatever_the_variant(flags: dict) -> None:
    """Every variant acts uniformly at random until learning_starts, as SB3 does; after it, only
    the epsilon-greedy schedule keeps a chance of a random action."""
    cfg = DQNConfig(
        total_steps=1000,
        learning_starts=300,
        exploration_fraction=0.1,  # would have reached epsilon_end at step 100
        **flags,
    )
    assert epsilon(cfg, 0) == epsilon(cfg, 299) == 1.0
    assert epsilon(cfg, 300) == pytest.approx(cfg.epsilon_end if not flags else 0.0)


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.4), (25, 0.55), (50, 0.7), (100, 1.0), (150, 1.0)]
)
def test_per_beta_rises_to_one_at_the_planned_total(step: int, expected: float) -> None:
    assert per_beta(DQNConfig(per_beta_start=0.4, total_steps=100), step) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("before", "after", "interval", "expected"),
    [(0, 4, 4, 1), (3, 9, 4, 2), (4, 7, 4, 0), (4, 4, 4, 0), (0, 1, 1, 1), (7, 32, 8, 4)],
)
def test_num_crossings_hand_values(before: int, after: int, interval: int, expected: int) -> None:
    assert num_crossings(before, after, interval) == expected


@given(
    before=st.integers(0, 500),
    jump=st.integers(0, 100),
    interval=st.integers(1, 60),
)
def test_num_crossings_counts_the_multiples_in_the_half_open_range(
    before: int, jump: int, interval: int
) -> None:
    after = before + jump
    brute = sum(1 for s in range(before + 1, after + 1) if s % interval == 0)
    assert num_crossings(before, after, interval) == brute
