"""Evaluation seeds: held-out episodes are never those of a periodic evaluation or training."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qlearn.config import MAX_SEED
from qlearn.evaluation import (
    HELD_OUT_EVAL_SEED_OFFSET,
    PERIODIC_EVAL_SEED_OFFSET,
    held_out_eval_seed,
    periodic_eval_seed,
)

seeds = st.integers(0, MAX_SEED)


@given(seed=seeds, index=st.integers(0, 10**12))
def test_held_out_seed_is_below_every_periodic_seed(seed: int, index: int) -> None:
    assert held_out_eval_seed(seed) < periodic_eval_seed(seed, index)


@given(seed=seeds, step=st.integers(0, 10**9 - 1))
def test_training_resets_stay_below_the_evaluation_seeds(seed: int, step: int) -> None:
    """A (resumed) training run resets with seed + step."""
    assert seed + step < held_out_eval_seed(seed)


def test_the_seeds_fit_minatar() -> None:
    """MinAtar seeds numpy's RandomState, which takes seeds below 2**32."""
    assert HELD_OUT_EVAL_SEED_OFFSET < PERIODIC_EVAL_SEED_OFFSET
    assert periodic_eval_seed(10**6, 10**6) < 2**32
    assert periodic_eval_seed(3, 2) == 3 + PERIODIC_EVAL_SEED_OFFSET + 2
    assert held_out_eval_seed(3) == 3 + HELD_OUT_EVAL_SEED_OFFSET
