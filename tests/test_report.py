"""Multi-seed reports: summaries against hand-computed values, curves read from seed logs."""

import json
from pathlib import Path

import numpy as np
import pytest

from qlearn.errors import QlearnError
from qlearn.report import compare, figure, load_seed_runs, summarize


def fake_run(path: Path, curves: list[list[float]], threshold: float | None = 475.0) -> Path:
    """A multi-seed run dir holding only what the reports read: multi_seed.json, evals.csv."""
    seeds = list(range(len(curves)))
    path.mkdir(parents=True)
    info = {"env_id": "CartPole-v1", "seeds": seeds, "reward_threshold": threshold}
    (path / "multi_seed.json").write_text(json.dumps(info))
    for seed, curve in zip(seeds, curves, strict=True):
        (path / f"seed_{seed}").mkdir()
        rows = ["step,mean_return,std_return"]
        rows += [f"{1000 * (i + 1)},{v},0.0" for i, v in enumerate(curve)]
        (path / f"seed_{seed}" / "evals.csv").write_text("\n".join(rows) + "\n")
    return path


def test_summary_of_hand_scores() -> None:
    scores = [0, 1, 2, 3, 4, 5, 6, 70]
    s = summarize(scores, reward_threshold=5)
    assert s.iqm.estimate == pytest.approx((2 + 3 + 4 + 5) / 4)  # the outlier 70 is trimmed
    assert s.mean.estimate == pytest.approx(91 / 8)
    assert s.fraction_solved == pytest.approx(3 / 8)  # 5, 6 and 70 reach the threshold
    assert s.iqm.low <= s.iqm.estimate <= s.iqm.high
    assert s.mean.low < s.mean.estimate < s.mean.high
    assert summarize(scores).fraction_solved is None


def test_curves_are_read_from_every_seed(tmp_path) -> None:
    run = load_seed_runs(fake_run(tmp_path / "a", [[1, 2, 3], [4, 5, 6], [7, 8]]))
    np.testing.assert_array_equal(run.steps, [1000, 2000])  # the steps every seed reached
    np.testing.assert_array_equal(run.curves, [[1, 2], [4, 5], [7, 8]])
    np.testing.assert_array_equal(run.final_scores, [2, 5, 8])
    assert run.reward_threshold == 475.0


def test_compare_puts_the_better_run_above(tmp_path) -> None:
    low = load_seed_runs(fake_run(tmp_path / "dqn", [[10, v] for v in (100, 120, 150, 90)]))
    high = load_seed_runs(fake_run(tmp_path / "double", [[10, v] for v in (480, 500, 470, 499)]))
    result = compare([low, high])
    assert result.names == ["dqn", "double"]
    assert result.improvement[0] is None
    p = result.improvement[1]
    assert p is not None and p.estimate == 1.0  # every seed of `double` beats every of `dqn`
    assert result.summaries[1].fraction_solved == pytest.approx(0.75)  # 470 misses
    assert result.summaries[0].fraction_solved == 0.0
    fig = figure([low, high])
    assert len(fig.axes) == 2
    with pytest.raises(QlearnError, match="at least two"):
        compare([low])


def test_a_plain_run_dir_is_refused(tmp_path) -> None:
    with pytest.raises(QlearnError, match="not a multi-seed run dir"):
        load_seed_runs(tmp_path)
