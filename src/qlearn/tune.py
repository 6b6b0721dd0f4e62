"""Hyperparameter search for DQN with Optuna, each trial scored over several seeds.

A study searches a space of `DQNConfig` fields (the default is modelled on rl-baselines3-zoo's
DQN space, scaled to short budgets; a TOML file narrows or replaces it) with a multivariate TPE
sampler. Each trial trains its config on every seed of the study, and scores it by the
interquartile mean (IQM) of the seeds' held-out greedy returns, so a config that wins on one lucky
seed does not win the study. A median pruner, fed the periodic evaluations, stops trials that
fall behind early.

The study lives in a SQLite file in the study folder (`study.db`): a killed study resumes where
it stopped, and `jobs` worker processes on one machine share it. With `ray_address`, trials run
as Ray tasks on a cluster instead. `write_report` leaves the best config as a TOML file that
`qlearn train --config` takes, a CSV of every trial, and plots of the optimisation history and
of the parameters' importances.

Optuna, and Ray for `ray_address`, are imported lazily: `pip install qlearn[tune]` (and `[ray]`).
This module never prints; `qlearn tune` (`qlearn.cli.tune`) presents what it returns.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import io
import json
import math
import multiprocessing
import os
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import numpy as np
import tomli_w

from qlearn.config import RUN, DQNConfig, Range, _field_metadata, _of_kind, coerce, read_toml
from qlearn.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import optuna

STORAGE_FILE = "study.db"
"""The SQLite file that holds a study, inside its folder."""
BEST_CONFIG_FILE = "best.toml"
TRIALS_FILE = "trials.csv"
HISTORY_PLOT = "history.png"
IMPORTANCE_PLOT = "importances.png"
STUDY_NAME = "qlearn"
SQLITE_TIMEOUT_S = 60.0
"""How long a worker waits for another's write lock on the SQLite file before giving up. Writes
are a few per evaluation and take milliseconds, so with a handful of workers the wait is short;
without a busy timeout SQLite fails at once with 'database is locked'."""

REPLAY_RATIO = "replay_ratio"
"""The one search-space name that is not a DQNConfig field: gradient steps per env step. A trial
sets `gradient_steps = max(1, round(train_interval * replay_ratio))`, so a long interval between
updates comes with more gradient steps each time instead of fewer updates overall (the zoo draws
`gradient_steps = train_freq // subsample_steps` for the same reason)."""
INTERRUPTED = "interrupted: the study stopped while this trial ran; its parameters are queued again"

# --------------------------------------------------------------------------- the search space


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched parameter: a list of `choices`, or a `low`-`high` range (`log` scale or not).

    Build it with `parse_space`, which checks it against the field's type and allowed range.
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def sample(self, trial: optuna.Trial) -> Any:
        """Draw this parameter's value for `trial` (a field value, decoded from Optuna's)."""
        if self.choices is not None:
            encoded = [_encode_choice(c) for c in self.choices]
            drawn = trial.suggest_categorical(self.name, encoded)
            return _decode_widths(drawn) if isinstance(self.choices[0], tuple) else drawn
        assert self.low is not None and self.high is not None
        if _base_type(self.name) is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """The TOML table this parameter is written as in a space file."""
        if self.choices is not None:
            return {"choices": [_toml_choice(c) for c in self.choices]}
        return {"low": self.low, "high": self.high, "log": self.log}


Space = dict[str, Param]
"""Parameters by name, in the order they are drawn."""

DEFAULT_SPACE_TOML = """\
# qlearn's default DQN search space, modelled on rl-baselines3-zoo's and scaled to budgets of
# 10^4-10^5 steps (shorter target intervals and warm-ups; no million-transition buffers).
gamma = { choices = [0.9, 0.95, 0.98, 0.99, 0.995, 0.999] }
learning_rate = { low = 1e-5, high = 1e-2, log = true }
batch_size = { choices = [16, 32, 64, 128, 256, 512] }
buffer_size = { choices = [10000, 50000, 100000] }
learning_starts = { choices = [0, 1000, 5000, 10000] }
train_interval = { choices = [1, 4, 8, 16, 128, 256] }
replay_ratio = { choices = [0.125, 0.25, 0.5, 1.0] }
epsilon_end = { low = 0.0, high = 0.2 }
exploration_fraction = { low = 0.01, high = 0.5 }
target_update_interval = { choices = [1, 250, 1000, 2500, 5000, 10000] }
hidden_sizes = { choices = [[64], [64, 64], [256, 256]] }
"""


def _encode_choice(value: Any) -> Any:
    # Optuna's categorical choices are scalars: a list of widths travels as "64,64".
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


def _decode_widths(value: str) -> tuple[int, ...]:
    return tuple(int(p) for p in value.split(","))


def _toml_choice(value: Any) -> Any:
    # TOML has no null: `none` is what `coerce` reads back as None.
    return list(value) if isinstance(value, tuple) else "none" if value is None else value


def _field_type(name: str) -> Any:
    if name == REPLAY_RATIO:
        return float
    return DQNConfig.field_types()[name]


def _base_type(name: str) -> Any:
    """The field's type without `| None`: what a `low`-`high` range is drawn as."""
    tp = _field_type(name)
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


def _field_range(name: str) -> Range | None:
    if name == REPLAY_RATIO:
        return Range(0, 64, low_open=True)
    return _of_kind(_field_metadata(DQNConfig)[name], Range)


def searchable_names() -> list[str]:
    """Names a space may search: the DQNConfig algorithm fields and `replay_ratio`."""
    metadata = _field_metadata(DQNConfig)
    fields = [name for name, meta in metadata.items() if _of_kind(meta, type(RUN)) is None]
    return [name for name in fields if name != "total_steps"] + [REPLAY_RATIO]


def _check_param(name: str, table: Any, source: str) -> Param:
    where = f"[{name}] in {source}"
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{where} must be a table such as {{ choices = [...] }} or "
            f"{{ low = ..., high = ... }}, not {table!r}"
        )
    unknown = sorted(set(table) - {"choices", "low", "high", "log"})
    if unknown:
        raise ConfigError(
            f"{where} has unknown key {unknown[0]!r}; allowed: choices, low, high, log"
        )
    tp, bounds = _field_type(name), _field_range(name)
    if "choices" in table:
        if set(table) - {"choices"}:
            raise ConfigError(f"{where} gives both choices and a range; keep one")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where} has an empty list of choices; allowed: a non-empty list")
        values = []
        for raw in choices:
            value = coerce(f"{name} choice", raw, tp)
            if bounds is not None and value is not None:
                for entry in value if isinstance(value, tuple) else (value,):
                    _check_in(bounds, f"{name} choice", entry, where)
            if isinstance(value, tuple) and not value:
                raise ConfigError(f"{where} has an empty list of widths; allowed: at least one")
            values.append(value)
        return Param(name, choices=tuple(dict.fromkeys(values)))
    if "low" not in table or "high" not in table:
        raise ConfigError(f"{where} needs choices = [...], or both low and high")
    base = _base_type(name)
    if base not in (int, float):
        raise ConfigError(
            f"{where}: {name} is not a number, so it takes choices = [...], not a range"
        )
    low, high = (
        coerce(f"{name} low", table["low"], base),
        coerce(f"{name} high", table["high"], base),
    )
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log = {log!r} is invalid; allowed: true or false")
    if low > high:
        raise ConfigError(f"{where} is an empty range: low = {low!r} > high = {high!r}")
    if bounds is not None:
        _check_in(bounds, f"{name} low", low, where)
        _check_in(bounds, f"{name} high", high, where)
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low = {low!r}")
    return Param(name, low=float(low) if base is float else low, high=high, log=log)


def _check_in(bounds: Range, what: str, value: float, where: str) -> None:
    try:
        bounds.check(what, value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_space(
    data: Mapping[str, Any], *, source: str = "space", base: Space | None = None
) -> Space:
    """A search space from a TOML table: `name = { choices = [...] }` or
    `name = { low = ..., high = ..., log = true }` per parameter.

    Each name must be a DQNConfig algorithm field (run settings such as `seed` are not searched)
    or `replay_ratio`; each choice and bound must be a value the field allows. With `base`, the
    file narrows it: its parameters replace those of the same name, and `include_defaults =
    false` keeps only the file's.

    Raises:
        ConfigError: naming the parameter and what is wrong with it.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must be a table of parameters")
    data = dict(data)
    include = data.pop("include_defaults", True)
    if not isinstance(include, bool):
        raise ConfigError(
            f"include_defaults = {include!r} in {source} is invalid; allowed: true or false"
        )
    allowed = searchable_names()
    space: Space = dict(base) if base is not None and include else {}
    for name, table in data.items():
        if name not in allowed:
            if name in DQNConfig.field_types():
                raise ConfigError(
                    f"{name!r} in {source} is a run setting or the budget, not a hyperparameter; "
                    "set it with --set or --steps instead"
                )
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown parameter {name!r} in {source}{hint}")
        space[name] = _check_param(name, table, source)
    if not space:
        raise ConfigError(f"{source} leaves nothing to search; name at least one parameter")
    return space


def default_space() -> Space:
    """The default search space (`DEFAULT_SPACE_TOML`)."""
    import tomllib

    return parse_space(tomllib.loads(DEFAULT_SPACE_TOML), source="the default space")


def load_space(path: str | Path | None) -> Space:
    """The default space, narrowed or replaced by the TOML file at `path` (see `parse_space`)."""
    if path is None:
        return default_space()
    return parse_space(read_toml(path), source=f"space file {str(path)!r}", base=default_space())


def space_to_toml(space: Space) -> str:
    """A space file that `load_space` reads back as `space` (with `include_defaults = false`)."""
    return tomli_w.dumps({"include_defaults": False, **{n: p.to_dict() for n, p in space.items()}})


def sample_config(trial: optuna.Trial, space: Space, base: DQNConfig) -> DQNConfig:
    """`base` with every parameter of `space` drawn for `trial`.

    Works with an `optuna.trial.FixedTrial` too, which turns a finished trial's parameters back
    into its config.

    Raises:
        ConfigError: the drawn values break a rule between fields (batch_size > buffer_size).
    """
    values = {name: param.sample(trial) for name, param in space.items()}
    ratio = values.pop(REPLAY_RATIO, None)
    if ratio is not None:
        interval = values.get("train_interval", base.train_interval)
        values["gradient_steps"] = max(1, round(interval * ratio))
    return base.replace(**values)


# --------------------------------------------------------------------------- one trial


@dataclasses.dataclass(frozen=True)
class TuneSetup:
    """What a study searches and how it scores a trial; saved in the study for `--resume`."""

    env_id: str
    base: DQNConfig
    """Settings every trial starts from; `steps` and the evaluation interval override it."""
    space: Space
    steps: int
    """Env steps each seed of a trial trains."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Every trial trains on these seeds; its score is the IQM of their returns."""
    evaluations: int = 5
    """Periodic evaluations per seed, the points where the pruner may stop a trial."""
    eval_episodes: int = 10
    """Held-out greedy episodes that score each seed's final policy."""
    trials: int = 100
    """Trials the study runs in all (pruned and failed ones included)."""
    sampler_seed: int = 0
    startup_trials: int = 10
    """Trials drawn at random before TPE models the results, and run to the end before the
    pruner compares against them."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("seeds is empty; allowed: at least one seed")
        for what, value, low in [
            ("steps", self.steps, 1),
            ("evaluations", self.evaluations, 1),
            ("eval_episodes", self.eval_episodes, 1),
            ("trials", self.trials, 1),
            ("startup_trials", self.startup_trials, 0),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{what} = {value!r} is invalid; allowed: an integer >= {low}")
        if self.evaluations > self.steps:
            raise ConfigError(
                f"evaluations = {self.evaluations} is more than steps = {self.steps}; "
                "allowed: at most one evaluation per step"
            )
        self.trial_base()  # the base must accept the budget (num_envs <= steps, ...)

    def trial_base(self) -> DQNConfig:
        """The config a trial's draws are applied to: the base with this study's budget."""
        return self.base.replace(
            total_steps=self.steps,
            eval_interval=max(1, self.steps // self.evaluations),
            eval_episodes=self.eval_episodes,
        )

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["base"] = self.base.to_dict()
        data["space"] = {name: param.to_dict() for name, param in self.space.items()}
        data["seeds"] = list(self.seeds)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> TuneSetup:
        data = json.loads(text)
        data["base"] = DQNConfig.from_dict(data["base"], source="the study's saved base config")
        data["space"] = parse_space(
            {"include_defaults": False, **data["space"]}, source="the study"
        )
        data["seeds"] = tuple(data["seeds"])
        return cls(**data)


def train_seeds(
    env_id: str,
    config: DQNConfig,
    seeds: Sequence[int],
    on_eval: Callable[[int, list[float]], bool] | None = None,
) -> list[float] | None:
    """Train `config` on every seed; each seed's held-out greedy mean return, or None if stopped.

    The seeds train together in this process (`MultiSeedDQN`, one env per seed): seed k learns
    what a single run of seed k learns, at a fraction of the time of training them one after
    another. A config with `num_envs > 1`, which the multi-seed engine does not take, trains its
    seeds one after another instead. `on_eval(step, returns)` is called at each periodic
    evaluation with the mean return of every seed at that step (of the first seed only, when the
    seeds train one after another); returning False stops training and this returns None. A
    seed's score is the mean return of `config.eval_episodes` held-out greedy episodes, which no
    periodic evaluation saw (`DQN.evaluate`).

    Raises:
        TrainingError: training failed (a non-finite loss, say).
    """
    from qlearn.train import DQN
    from qlearn.train.multi_seed import MultiSeedDQN

    if config.num_envs == 1:
        runs = MultiSeedDQN(env_id, config, seeds=seeds)

        def report_all(runs: MultiSeedDQN, step: int) -> bool:
            assert on_eval is not None
            return on_eval(step, [sc.last_eval for sc in runs.seed_counters])

        runs.learn(callback=report_all if on_eval is not None else None)
        if runs.counters.step < config.total_steps:
            return None
        return [result.mean_return for result in runs.evaluate(config.eval_episodes)]

    def report_first(_agent: DQN, metrics: dict[str, float]) -> bool:
        assert on_eval is not None
        return on_eval(int(metrics["step"]), [float(metrics["mean_return"])])

    scores = []
    for index, seed in enumerate(seeds):
        agent = DQN(env_id, config.replace(seed=seed))
        agent.learn(callback=report_first if index == 0 and on_eval is not None else None)
        if agent.counters.step < config.total_steps:
            return None
        scores.append(agent.evaluate(config.eval_episodes).mean_return)
    return scores


def score_interval(scores: Sequence[float]) -> tuple[float, float, float]:
    """(IQM, low, high): the seeds' IQM and its 95% bootstrap interval (NaN bounds for 1 seed)."""
    from qlearn.stats import bootstrap_interval

    interval = bootstrap_interval(np.asarray(scores, dtype=float), statistic="iqm")
    return float(interval.estimate), float(interval.low), float(interval.high)


def objective(trial: optuna.Trial, setup: TuneSetup) -> float:
    """Train the trial's config on every seed of `setup`; its score is the IQM over seeds.

    A draw the config refuses, a training error (a non-finite loss) or a non-finite score prunes
    the trial with the reason in its `error` attribute. Any other exception is recorded the same
    way and the trial returns NaN, which Optuna records as failed before it goes on: a bug that
    fails every trial shows in the study's records, not as a crash. SIGINT or SIGTERM
    (`TrainingInterrupted`) and KeyboardInterrupt stop the study; the trial's parameters are
    queued to run again when it resumes.
    """
    import optuna

    from qlearn.train import TrainingInterrupted

    try:
        config = sample_config(trial, setup.space, setup.trial_base())
    except ConfigError as exc:
        trial.set_user_attr("error", f"invalid draw: {exc}")
        raise optuna.TrialPruned(str(exc)) from None

    def on_eval(step: int, returns: list[float]) -> bool:
        from qlearn.stats import iqm

        value = float(iqm(np.asarray(returns, dtype=float)))
        if not math.isfinite(value):
            return True  # the pruner cannot compare it; the final score decides
        trial.report(value, step)
        if trial.should_prune():
            trial.set_user_attr("pruned_at_step", step)
            return False
        return True

    try:
        scores = train_seeds(setup.env_id, config, setup.seeds, on_eval)
    except (TrainingInterrupted, KeyboardInterrupt):
        trial.set_user_attr("error", INTERRUPTED)
        trial.study.enqueue_trial(trial.params, skip_if_exists=False)
        raise
    except TrainingError as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise optuna.TrialPruned(str(exc)) from None
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        return math.nan
    if scores is None:
        raise optuna.TrialPruned()
    trial.set_user_attr("scores", scores)
    if not all(math.isfinite(s) for s in scores):
        trial.set_user_attr("error", f"non-finite score among {scores}")
        raise optuna.TrialPruned()
    value, low, high = score_interval(scores)
    trial.set_user_attr("iqm_low", low)
    trial.set_user_attr("iqm_high", high)
    return value


# --------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """A finished trial as the CLI reports it and the CSV lists it."""

    number: int
    state: Literal["complete", "pruned", "failed", "running", "waiting"]
    value: float | None
    """The IQM over seeds (complete trials); the last reported value (pruned ones)."""
    low: float | None
    high: float | None
    scores: list[float] | None
    params: dict[str, Any]
    duration_s: float | None
    pruned_at_step: int | None
    error: str | None


def trial_record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The record of a trial as stored in the study."""
    state = trial.state.name.lower()
    state = {"fail": "failed"}.get(state, state)
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    attrs = trial.user_attrs
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialRecord(
        number=trial.number,
        state=state,  # type: ignore[arg-type]
        value=value,
        low=attrs.get("iqm_low"),
        high=attrs.get("iqm_high"),
        scores=attrs.get("scores"),
        params=dict(trial.params),
        duration_s=duration,
        pruned_at_step=attrs.get("pruned_at_step"),
        error=attrs.get("error"),
    )


def check_study_folder(folder: str | Path) -> Path:
    """Create `folder` if needed and make sure files can be written in it.

    Raises:
        ConfigError: it is a file, cannot be created, or is not writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"study folder {str(folder)!r} is a file; allowed: a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"study folder {str(folder)!r} is not writable ({exc.strerror or exc}); "
            "allowed: a folder this user can create files in"
        ) from None
    return folder


def _storage(folder: Path) -> optuna.storages.RDBStorage:
    import optuna

    url = f"sqlite:///{(folder / STORAGE_FILE).resolve()}"
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    )


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs each trial to stderr by default, and a failed trial's traceback as a warning;
    the library leaves presenting to the CLI (failures are recorded in the trial's `error`)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _load(folder: Path, setup: TuneSetup, worker: int = 0) -> optuna.Study:
    """The study in `folder` with its sampler and pruner (these are not stored, so each process
    builds its own; the seed moves with the trials already run and the worker, so a resumed or
    parallel sampler does not draw the same random startup points again)."""
    import optuna

    storage = _storage(folder)
    done = len(storage.get_all_trials(storage.get_study_id_from_name(STUDY_NAME)))
    sampler = optuna.samplers.TPESampler(
        multivariate=True,
        n_startup_trials=setup.startup_trials,
        seed=setup.sampler_seed + 1000 * worker + done,
        constant_liar=True,
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=setup.startup_trials,
        n_warmup_steps=setup.steps // 3,
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)


def create_study(folder: str | Path, setup: TuneSetup) -> Path:
    """Create a new study in `folder` (made if missing) for `setup`.

    Raises:
        ConfigError: the folder is not writable or already holds a study.
    """
    import optuna

    folder = check_study_folder(folder)
    if (folder / STORAGE_FILE).exists():
        raise ConfigError(
            f"study folder {str(folder)!r} already holds a study; continue it with --resume "
            f"{str(folder)!r} or choose another folder"
        )
    with _quiet_optuna():
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=_storage(folder), direction="maximize"
        )
    study.set_user_attr("setup", setup.to_json())
    return folder


def load_setup(folder: str | Path) -> TuneSetup:
    """The setup saved in the study in `folder`.

    Raises:
        ConfigError: there is no study in the folder.
    """
    import optuna

    folder = check_study_folder(folder)
    if not (folder / STORAGE_FILE).exists():
        raise ConfigError(
            f"study folder {str(folder)!r} holds no study ({STORAGE_FILE} is missing)"
        )
    with _quiet_optuna():
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(folder))
        except KeyError:
            raise ConfigError(f"{str(folder / STORAGE_FILE)!r} holds no qlearn study") from None
    return TuneSetup.from_json(study.user_attrs["setup"])


def _requeue_interrupted(study: optuna.Study) -> None:
    """Mark trials a killed study left running as failed, and queue their parameters again."""
    from optuna.trial import TrialState

    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "error", INTERRUPTED)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, skip_if_exists=False)


def _counted(study: optuna.Study) -> int:
    """Trials that count against the study's total: finished ones, except interrupted ones."""
    from optuna.trial import TrialState

    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    return sum(t.user_attrs.get("error") != INTERRUPTED for t in finished)


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative integers, larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def run_study(
    folder: str | Path,
    *,
    jobs: int = 1,
    timeout_s: float | None = None,
    ray_address: str | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    trials: int | None = None,
) -> optuna.Study:
    """Run the study in `folder` (see `create_study`) until it holds `trials` finished trials.

    A study that was killed continues: trials it left running are marked failed and their
    parameters run again first. Pruned and failed trials count towards the total.

    Args:
        folder: the study folder.
        jobs: trials run at once: worker processes on this machine sharing the SQLite file, or
            Ray tasks in flight with `ray_address`.
        timeout_s: stop starting trials after this many seconds (running ones finish).
        ray_address: run trials as Ray tasks on this cluster (`auto`, `host:port`, or `local`
            for a Ray started in this process).
        on_trial: called with each finished trial, in the order they finish.
        trials: the study's total, replacing the saved one (to extend a finished study).

    Raises:
        ConfigError: bad arguments, or no study in the folder.
    """
    folder = Path(folder)
    setup = load_setup(folder)
    if trials is not None and trials != setup.trials:
        setup = dataclasses.replace(setup, trials=trials)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs = {jobs!r} is invalid; allowed: an integer >= 1")
    with _quiet_optuna():
        study = _load(folder, setup)
        if trials is not None:
            study.set_user_attr("setup", setup.to_json())
        _requeue_interrupted(study)
        remaining = setup.trials - _counted(study)
        if remaining <= 0:
            return study
        if ray_address is not None:
            _run_on_ray(study, setup, remaining, jobs, timeout_s, ray_address, on_trial)
        elif jobs == 1:
            callbacks = [lambda _study, trial: on_trial(trial_record(trial))] if on_trial else []
            study.optimize(
                lambda trial: objective(trial, setup),
                n_trials=remaining,
                timeout=timeout_s,
                callbacks=callbacks,
                gc_after_trial=True,
            )
        else:
            _run_processes(folder, setup, remaining, jobs, timeout_s, on_trial)
    return _load(folder, setup)


def _worker(
    folder: str, setup_json: str, num_trials: int, timeout_s: float | None, index: int
) -> None:
    """One worker process of `run_study(jobs=N)`: its share of the trials, on the shared file."""
    from qlearn.train import TrainingInterrupted

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    setup = TuneSetup.from_json(setup_json)
    with _quiet_optuna():
        study = _load(Path(folder), setup, worker=index)
        # A stop (the parent's Ctrl-C or terminate) ends the worker quietly: the objective has
        # already queued the trial it interrupted.
        with contextlib.suppress(TrainingInterrupted, KeyboardInterrupt):
            study.optimize(
                lambda trial: objective(trial, setup),
                n_trials=num_trials,
                timeout=timeout_s,
                gc_after_trial=True,
            )


def _finished(study: optuna.Study, seen: set[int]) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    new = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and t.number not in seen
    ]
    seen.update(t.number for t in new)
    return sorted(new, key=lambda t: t.datetime_complete or t.datetime_start)


def _run_processes(
    folder: Path,
    setup: TuneSetup,
    remaining: int,
    jobs: int,
    timeout_s: float | None,
    on_trial: Callable[[TrialRecord], None] | None,
) -> None:
    # Spawned, not forked: a forked child would inherit torch's threads and the SQLite connection.
    context = multiprocessing.get_context("spawn")
    shares = [n for n in _shares(remaining, jobs) if n > 0]
    processes = [
        context.Process(
            target=_worker,
            args=(str(folder), setup.to_json(), n, timeout_s, index + 1),
            name=f"qlearn-tune-{index + 1}",
        )
        for index, n in enumerate(shares)
    ]
    study = _load(folder, setup)
    seen = {t.number for t in _finished(study, set())}
    try:
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes):
            time.sleep(1.0)
            for trial in _finished(study, seen):
                if on_trial is not None:
                    on_trial(trial_record(trial))
        for trial in _finished(study, seen):
            if on_trial is not None:
                on_trial(trial_record(trial))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    crashed = [p for p in processes if p.exitcode not in (0, None)]
    if crashed:
        raise TrainingError(
            f"worker {crashed[0].name} exited with code {crashed[0].exitcode}; the study keeps "
            "the trials finished so far (continue it with --resume)"
        )


def _ray_trial(setup_json: str, params: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: train one trial's config on every seed. Returns the first seed's evaluation
    curve and the scores (or the error), for the driver to report to the study."""
    import optuna

    setup = TuneSetup.from_json(setup_json)
    curve: dict[int, float] = {}

    def on_eval(step: int, returns: list[float]) -> bool:
        curve[step] = float(np.mean(returns))
        return True

    try:
        config = sample_config(optuna.trial.FixedTrial(params), setup.space, setup.trial_base())
        scores = train_seeds(setup.env_id, config, setup.seeds, on_eval)
    except Exception as exc:
        return {
            "curve": curve,
            "error": f"{type(exc).__name__}: {exc}",
            "pruned": isinstance(exc, ConfigError | TrainingError),
        }
    return {"curve": curve, "scores": scores}


def _run_on_ray(
    study: optuna.Study,
    setup: TuneSetup,
    remaining: int,
    jobs: int,
    timeout_s: float | None,
    address: str,
    on_trial: Callable[[TrialRecord], None] | None,
) -> None:
    """Ask the study for trials here and train them as Ray tasks, `jobs` in flight at a time.

    The driver alone touches the study, so the cluster's nodes need no access to its file.
    A task reports its evaluation curve when it ends, so the pruner sees it then: on Ray the
    curve is recorded and trials run to the end, none is stopped early.
    """
    import ray
    from optuna.trial import TrialState

    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(
                num_cpus=jobs,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_trial)
    setup_json = ray.put(setup.to_json())
    began = time.monotonic()
    pending: dict[Any, optuna.Trial] = {}
    asked = 0
    try:
        while pending or asked < remaining:
            out_of_time = timeout_s is not None and time.monotonic() - began > timeout_s
            while len(pending) < jobs and asked < remaining and not out_of_time:
                trial = study.ask()
                for param in setup.space.values():  # the draws land in trial.params
                    param.sample(trial)
                pending[task.remote(setup_json, trial.params)] = trial
                asked += 1
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(done[0])
            result = ray.get(done[0])
            for step, value in sorted(result["curve"].items()):
                trial.report(value, step)
            if "error" in result:
                trial.set_user_attr("error", result["error"])
                state = TrialState.PRUNED if result["pruned"] else TrialState.FAIL
                frozen = study.tell(trial, state=state)
            else:
                scores = result["scores"]
                trial.set_user_attr("scores", scores)
                value, low, high = score_interval(scores)
                trial.set_user_attr("iqm_low", low)
                trial.set_user_attr("iqm_high", high)
                frozen = study.tell(trial, value)
            if on_trial is not None:
                on_trial(trial_record(frozen))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------- the report


@dataclasses.dataclass(frozen=True)
class StudyReport:
    """What `write_report` found and wrote."""

    setup: TuneSetup
    records: list[TrialRecord]
    best: TrialRecord | None
    """The complete trial with the highest IQM; None when no trial completed."""
    best_config: DQNConfig | None
    files: list[Path]
    notes: list[str]
    """What could not be drawn, and why (importances need two complete trials)."""

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)


def best_config(study: optuna.Study, setup: TuneSetup) -> DQNConfig:
    """The config of the best complete trial: the base, its draws, and the study's budget."""
    import optuna

    return sample_config(
        optuna.trial.FixedTrial(study.best_trial.params), setup.space, setup.trial_base()
    )


def config_toml(config: DQNConfig, header: str = "", keep: Sequence[str] = ()) -> str:
    """The fields of `config` that differ from the defaults (and those in `keep`), as TOML that
    `qlearn train --config` takes, after `header` (each line made a comment)."""
    defaults = DQNConfig().to_dict()
    data = {
        k: ("none" if v is None else v)
        for k, v in config.to_dict().items()
        if v != defaults[k] or k in keep
    }
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*lines, tomli_w.dumps(data)]) if lines else tomli_w.dumps(data)


def _csv_text(records: Sequence[TrialRecord], names: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "number",
            "state",
            "value",
            "iqm_low",
            "iqm_high",
            "scores",
            "duration_s",
            "pruned_at_step",
            "error",
            *names,
        ]
    )
    for r in records:
        writer.writerow(
            [
                r.number,
                r.state,
                "" if r.value is None else repr(r.value),
                "" if r.low is None else repr(r.low),
                "" if r.high is None else repr(r.high),
                "" if r.scores is None else " ".join(repr(s) for s in r.scores),
                "" if r.duration_s is None else f"{r.duration_s:.2f}",
                "" if r.pruned_at_step is None else r.pruned_at_step,
                r.error or "",
                *(r.params.get(n, "") for n in names),
            ]
        )
    return out.getvalue()


def write_report(folder: str | Path, header: str = "") -> StudyReport:
    """Write the study's outputs in its folder and return what they hold.

    Files: `best.toml` (the best config, `header` as a comment on top), `trials.csv` (one row
    per trial), `history.png` (the optimisation history) and `importances.png` (fANOVA
    importances of the parameters; left out, with a note, before two trials complete).
    """
    from optuna.trial import TrialState

    from qlearn.checkpoint import atomic_write_text
    from qlearn.plots import _save

    folder = Path(folder)
    setup = load_setup(folder)
    with _quiet_optuna(), contextlib.ExitStack() as stack:
        study = _load(folder, setup)
        trials = study.get_trials(deepcopy=False)
        records = [trial_record(t) for t in trials]
        files, notes = [], []
        atomic_write_text(folder / TRIALS_FILE, _csv_text(records, list(setup.space)))
        files.append(folder / TRIALS_FILE)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = config = None
        if complete:
            best = trial_record(study.best_trial)
            config = best_config(study, setup)
            atomic_write_text(
                folder / BEST_CONFIG_FILE,
                config_toml(config, header, keep=[n for n in setup.space if n != REPLAY_RATIO]),
            )
            files.append(folder / BEST_CONFIG_FILE)
            import matplotlib.pyplot as plt
            from optuna.visualization import matplotlib as vis

            # Optuna warns when the importances come out equal (few trials); the plot shows it.
            warnings.simplefilter("ignore", UserWarning)
            # Its plots switch matplotlib to the ggplot style for the whole process; keep that
            # inside this report.
            stack.enter_context(plt.rc_context())

            axes = vis.plot_optimization_history(study, target_name="IQM return")
            files.append(_save(axes.figure, folder / HISTORY_PLOT, bbox_inches="tight"))
            varied = [n for n in setup.space if len({repr(t.params.get(n)) for t in complete}) > 1]
            if len(complete) >= 2 and varied:
                axes = vis.plot_param_importances(study, params=varied)
                files.append(_save(axes.figure, folder / IMPORTANCE_PLOT, bbox_inches="tight"))
            else:
                notes.append("no importance plot: it needs two complete trials that differ")
        else:
            notes.append("no trial completed: no best config and no plots")
    return StudyReport(setup, records, best, config, files, notes)
