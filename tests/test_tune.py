"""`qlearn.tune`: the search space is checked against the config's own ranges, a trial's score is
the IQM of its seeds' scores, and a study survives bad trials, a kill, parallel workers and Ray.

Studies here are tiny (600-step CartPole trials on a narrow space), seconds per trial.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest

from qlearn import DQN, DQNConfig
from qlearn.errors import ConfigError
from qlearn.stats import iqm
from qlearn.tune import (
    BEST_CONFIG_FILE,
    HISTORY_PLOT,
    IMPORTANCE_PLOT,
    INTERRUPTED,
    REPLAY_RATIO,
    STUDY_NAME,
    TRIALS_FILE,
    TuneSetup,
    _storage,
    check_study_folder,
    create_study,
    default_space,
    load_setup,
    load_space,
    parse_space,
    run_study,
    sample_config,
    space_to_toml,
    train_seeds,
    trial_record,
    write_report,
)

ENV = "CartPole-v1"
NARROW = {
    "include_defaults": False,
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "gamma": {"choices": [0.9, 0.99]},
    "learning_starts": {"choices": [100]},
    "hidden_sizes": {"choices": [[16]]},
    "buffer_size": {"choices": [1000]},
}


def small_setup(**changes: object) -> TuneSetup:
    setup = TuneSetup(
        env_id=ENV,
        base=DQNConfig(),
        space=parse_space(NARROW, source="test"),
        steps=600,
        seeds=(0, 1, 2),
        evaluations=2,
        eval_episodes=3,
        trials=3,
        startup_trials=3,  # no trial of these small studies is pruned, whatever it scores
    )
    return dataclasses.replace(setup, **changes)


def study_of(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=_storage(folder))


# --------------------------------------------------------------------------- the space


def test_default_space_holds_the_zoo_parameters() -> None:
    space = default_space()
    for name in [
        "gamma",
        "learning_rate",
        "batch_size",
        "train_interval",
        REPLAY_RATIO,
        "epsilon_end",
        "exploration_fraction",
        "target_update_interval",
        "hidden_sizes",
    ]:
        assert name in space
    assert space["learning_rate"].log
    assert (64, 64) in space["hidden_sizes"].choices


def test_a_space_file_narrows_the_default_or_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text("gamma = { choices = [0.98, 0.99] }\n")
    narrowed = load_space(path)
    assert narrowed["gamma"].choices == (0.98, 0.99)
    assert set(narrowed) == set(default_space())
    path.write_text("include_defaults = false\nbatch_size = { low = 32, high = 128, log = true }\n")
    replaced = load_space(path)
    assert list(replaced) == ["batch_size"]
    assert (replaced["batch_size"].low, replaced["batch_size"].high) == (32, 128)


def test_space_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(space_to_toml(default_space()))
    assert load_space(path) == default_space()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gama": {"choices": [0.9]}}, "unknown parameter 'gama' in test; did you mean 'gamma'?"),
        ({"seed": {"choices": [1, 2]}}, "'seed' in test is a run setting"),
        ({"gamma": {"low": 0.99, "high": 0.9}}, "empty range: low = 0.99 > high = 0.9"),
        ({"gamma": {"choices": []}}, "empty list of choices"),
        ({"gamma": {"low": 0.9, "high": 1.5}}, "gamma high = 1.5 is out of range; allowed: [0, 1]"),
        (
            {"exploration_fraction": {"low": 0.0, "high": 0.5}},
            "exploration_fraction low = 0.0 is out of range; allowed: (0, 1]",
        ),
        ({"batch_size": {"choices": [32, 0]}}, "batch_size choice = 0 is out of range"),
        ({"hidden_sizes": {"choices": [[64, -1]]}}, "hidden_sizes choice = -1 is out of range"),
        ({"loss": {"low": 0, "high": 1}}, "loss is not a number, so it takes choices"),
        ({"loss": {"choices": ["huber", "l1"]}}, "loss choice = 'l1' is invalid"),
        ({"learning_rate": {"low": 0.0, "high": 1.0, "log": True}}, "out of range"),
        ({"gamma": {"low": 0.9}}, "needs choices = [...], or both low and high"),
        ({"gamma": {"choices": [0.9], "step": 1}}, "unknown key 'step'"),
        ({"gamma": 0.9}, "[gamma] in test must be a table"),
        ({"include_defaults": False}, "leaves nothing to search"),
    ],
)
def test_bad_space_is_one_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(data, source="test")
    assert message in str(info.value)


def test_sample_config_sets_fields_and_derives_gradient_steps() -> None:
    space = parse_space(
        {
            "include_defaults": False,
            "train_interval": {"choices": [1, 8]},
            REPLAY_RATIO: {"choices": [0.125, 0.25, 1.0]},
            "hidden_sizes": {"choices": [[64], [32, 32]]},
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        }
    )
    base = DQNConfig(gamma=0.9)
    fixed = optuna.trial.FixedTrial(
        {"train_interval": 8, REPLAY_RATIO: 0.25, "hidden_sizes": "32,32", "learning_rate": 3e-3}
    )
    config = sample_config(fixed, space, base)
    assert config.gradient_steps == 2  # 8 steps x 0.25 updates per step
    assert config.hidden_sizes == (32, 32)
    assert config.learning_rate == 3e-3
    assert config.gamma == 0.9  # from the base
    fixed = optuna.trial.FixedTrial(
        {"train_interval": 1, REPLAY_RATIO: 0.125, "hidden_sizes": "64", "learning_rate": 1e-3}
    )
    assert sample_config(fixed, space, base).gradient_steps == 1  # never below one


def test_setup_round_trips_through_json() -> None:
    setup = small_setup(base=DQNConfig(double_q=True, hidden_sizes=(8, 8)))
    assert TuneSetup.from_json(setup.to_json()) == setup


def test_setup_refuses_a_budget_the_base_cannot_take() -> None:
    with pytest.raises(ConfigError, match="num_envs"):
        small_setup(base=DQNConfig(num_envs=8), steps=4, evaluations=1)
    with pytest.raises(ConfigError, match="evaluations = 10 is more than steps = 5"):
        small_setup(steps=5, evaluations=10)


# --------------------------------------------------------------------------- training a trial


def test_train_seeds_scores_each_seed_as_its_own_run() -> None:
    """The seeds of a trial train together (`MultiSeedDQN`), yet seed k's score is the one a
    plain run of seed k gets, and every evaluation reports every seed's mean return."""
    config = small_setup().trial_base().replace(learning_starts=100, buffer_size=1000)
    reports: list[tuple[int, list[float]]] = []
    scores = train_seeds(ENV, config, [3, 4], lambda step, r: reports.append((step, r)) or True)
    assert scores is not None
    periodic = {step: [] for step in (300, 600)}
    for seed, score in zip([3, 4], scores, strict=True):
        agent = DQN(ENV, config.replace(seed=seed))
        agent.learn(callback=lambda a, m: periodic[int(m["step"])].append(m["mean_return"]))
        assert score == agent.evaluate(config.eval_episodes).mean_return
    assert reports == [(300, periodic[300]), (600, periodic[600])]


def test_train_seeds_with_several_envs_trains_seeds_in_turn() -> None:
    """num_envs > 1 (which the multi-seed engine refuses) trains the seeds one after another;
    only the first seed reports its evaluations."""
    config = small_setup().trial_base().replace(learning_starts=100, buffer_size=1000, num_envs=2)
    reports: list[tuple[int, list[float]]] = []
    scores = train_seeds(ENV, config, [3, 4], lambda step, r: reports.append((step, r)) or True)
    assert scores is not None
    for seed, score in zip([3, 4], scores, strict=True):
        agent = DQN(ENV, config.replace(seed=seed))
        agent.learn()
        assert score == agent.evaluate(config.eval_episodes).mean_return
    assert [step // 300 for step, _ in reports] == [1, 2]  # two envs may cross 300 at 301
    assert all(len(returns) == 1 for _, returns in reports)


def test_train_seeds_stops_when_told() -> None:
    config = small_setup().trial_base().replace(learning_starts=100, buffer_size=1000)
    assert train_seeds(ENV, config, [0, 1], lambda step, r: False) is None


# --------------------------------------------------------------------------- a study


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study") / "cartpole"
    create_study(folder, small_setup())
    seen = []
    run_study(folder, on_trial=seen.append)
    assert [r.number for r in seen] == [0, 1, 2]
    write_report(folder, header="made by a test\nsecond line")
    return folder


def test_a_trial_scores_the_iqm_of_its_seeds(finished_study: Path) -> None:
    trials = study_of(finished_study).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in trials:
        scores = trial.user_attrs["scores"]
        assert len(scores) == 3
        # IQM of 3 scores: trim_mean drops int(0.75) = 0 at each end, so it is their mean.
        assert trial.value == pytest.approx(np.mean(scores))
        assert trial.value == pytest.approx(iqm(scores))
        assert trial.user_attrs["iqm_low"] <= trial.value <= trial.user_attrs["iqm_high"]
        assert sorted(trial.intermediate_values) == [300, 600]  # the seeds' IQM at each evaluation


def test_the_report_files(finished_study: Path) -> None:
    study = study_of(finished_study)
    text = (finished_study / BEST_CONFIG_FILE).read_text()
    assert text.startswith("# made by a test\n# second line\n")
    config = DQNConfig.from_toml(finished_study / BEST_CONFIG_FILE)
    best = study.best_trial.params
    assert config.learning_rate == best["learning_rate"]
    assert config.gamma == best["gamma"]
    assert config.total_steps == 600
    assert config.hidden_sizes == (16,)
    assert tomllib.loads(text)["gamma"] == best["gamma"]  # written even where it is the default
    with open(finished_study / TRIALS_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert [r["state"] for r in rows] == ["complete"] * 3
    assert [float(r["learning_rate"]) for r in rows] == [
        t.params["learning_rate"] for t in study.trials
    ]
    assert [float(r["value"]) for r in rows] == [t.value for t in study.trials]
    for name in (HISTORY_PLOT, IMPORTANCE_PLOT):
        assert (finished_study / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_sampler_seed_runs_the_same_study(finished_study: Path, tmp_path: Path) -> None:
    create_study(tmp_path, small_setup())
    again = run_study(tmp_path).get_trials()
    first = study_of(finished_study).get_trials()
    assert [t.params for t in again] == [t.params for t in first]
    assert [t.value for t in again] == [t.value for t in first]
    assert len({t.params["learning_rate"] for t in first}) == 3  # and it did search


def test_a_new_study_refuses_a_used_folder(finished_study: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a study; continue it with --resume"):
        create_study(finished_study, small_setup())


def test_a_folder_without_a_study(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no study"):
        load_setup(tmp_path)


def test_an_unwritable_study_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        check_study_folder(blocker / "study")
    with pytest.raises(ConfigError, match="is a file"):
        check_study_folder(blocker)


def test_a_non_finite_loss_prunes_the_trial_and_the_study_goes_on(tmp_path: Path) -> None:
    space = parse_space({**NARROW, "learning_rate": {"choices": [1e38, 1e-3]}})
    setup = small_setup(space=space, trials=4, seeds=(0,))
    create_study(tmp_path, setup)
    with pytest.warns(RuntimeWarning):  # numpy's overflow in the exploding network
        study = run_study(tmp_path)
    records = [trial_record(t) for t in study.get_trials()]
    assert len(records) == 4
    exploded = [r for r in records if r.params["learning_rate"] == 1e38]
    assert exploded, "the sampler never drew the exploding learning rate"
    for r in exploded:
        assert r.state == "pruned"
        assert "non-finite loss" in r.error
    assert all(r.state == "complete" for r in records if r.params["learning_rate"] == 1e-3)


def test_a_trial_that_raises_is_recorded_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qlearn.tune

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(qlearn.tune, "train_seeds", broken)
    create_study(tmp_path, small_setup(trials=2))
    study = run_study(tmp_path)
    records = [trial_record(t) for t in study.get_trials()]
    assert [(r.state, r.error) for r in records] == [("failed", "RuntimeError: boom")] * 2
    report = write_report(tmp_path)
    assert report.best is None
    assert report.notes == ["no trial completed: no best config and no plots"]
    assert not (tmp_path / BEST_CONFIG_FILE).exists()


def test_a_trial_behind_the_median_is_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pruner sees the IQM of the seeds' returns at each evaluation: after one trial whose
    seeds reached 100, one whose seeds reach 0, 0 and 50 (IQM 16.7) stops at its first."""
    import qlearn.tune

    curves = iter([[100.0, 100.0, 100.0], [0.0, 0.0, 50.0]])

    def fake(env_id, config, seeds, on_eval):  # type: ignore[no-untyped-def]
        returns = next(curves)
        for step in (300, 600):
            if not on_eval(step, returns):
                return None
        return returns

    monkeypatch.setattr(qlearn.tune, "train_seeds", fake)
    create_study(tmp_path, small_setup(trials=2, startup_trials=1))
    records = [trial_record(t) for t in run_study(tmp_path).get_trials()]
    assert [(r.state, r.value, r.pruned_at_step) for r in records] == [
        ("complete", 100.0, None),
        ("pruned", pytest.approx(50 / 3), 300),
    ]


def test_a_killed_study_resumes_and_reruns_the_interrupted_trial(tmp_path: Path) -> None:
    create_study(tmp_path, small_setup(trials=3))
    run_study(tmp_path, trials=1)
    # A kill leaves a trial RUNNING in the file, with its parameters drawn: make one.
    study = study_of(tmp_path)
    params = study.ask(study.trials[0].distributions).params
    study = run_study(tmp_path, trials=3)  # the first call saved a total of 1
    records = [trial_record(t) for t in study.get_trials()]
    assert [(r.state, r.error) for r in records] == [
        ("complete", None),
        ("failed", INTERRUPTED),
        ("complete", None),
        ("complete", None),
    ]
    assert records[2].params == params  # queued again, first
    assert load_setup(tmp_path).trials == 3


@pytest.mark.slow  # two spawned workers each import torch and optuna
def test_parallel_workers_share_the_sqlite_file(tmp_path: Path) -> None:
    create_study(tmp_path, small_setup(trials=2, seeds=(0, 1)))
    seen = []
    study = run_study(tmp_path, jobs=2, on_trial=seen.append)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(r.number for r in seen) == [0, 1]
    assert all(t.value == pytest.approx(iqm(t.user_attrs["scores"])) for t in trials)


@pytest.mark.slow  # starts a local Ray
def test_trials_run_as_ray_tasks(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    create_study(tmp_path, small_setup(trials=2, seeds=(0, 1)))
    seen = []
    study = run_study(tmp_path, jobs=2, ray_address="local", on_trial=seen.append)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        assert trial.value == pytest.approx(iqm(trial.user_attrs["scores"]))
        assert sorted(trial.intermediate_values) == [300, 600]
        assert math.isfinite(trial.user_attrs["iqm_low"])
    assert sorted(r.number for r in seen) == [0, 1]


def test_an_interrupt_stops_the_study_and_queues_the_trial_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qlearn.tune
    from qlearn.train import TrainingInterrupted

    def interrupted(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted("SIGTERM at step 100")

    create_study(tmp_path, small_setup(trials=2))
    with monkeypatch.context() as patch:
        patch.setattr(qlearn.tune, "train_seeds", interrupted)
        with pytest.raises(TrainingInterrupted):
            run_study(tmp_path)
    stopped = study_of(tmp_path).trials
    assert [(t.state.name, t.user_attrs.get("error")) for t in stopped] == [
        ("FAIL", INTERRUPTED),
        ("WAITING", None),
    ]
    records = [trial_record(t) for t in run_study(tmp_path).get_trials()]
    assert [r.state for r in records] == ["failed", "complete", "complete"]
    assert records[1].params == stopped[0].params


def test_the_docs_show_the_default_space() -> None:
    from qlearn.tune import DEFAULT_SPACE_TOML

    page = (Path(__file__).resolve().parent.parent / "docs" / "tune.md").read_text()
    entries = [line for line in DEFAULT_SPACE_TOML.splitlines() if not line.startswith("#")]
    assert entries and all(line in page for line in entries)


def test_a_space_with_none_and_text_choices_round_trips(tmp_path: Path) -> None:
    space = parse_space(
        {
            "include_defaults": False,
            "max_grad_norm": {"choices": ["none", 10.0]},
            "loss": {"choices": ["huber", "mse"]},
        }
    )
    assert space["max_grad_norm"].choices == (None, 10.0)
    path = tmp_path / "space.toml"
    path.write_text(space_to_toml(space))
    assert load_space(path) == space
    fixed = optuna.trial.FixedTrial({"max_grad_norm": None, "loss": "mse"})
    config = sample_config(fixed, space, DQNConfig())
    assert (config.max_grad_norm, config.loss) == (None, "mse")
