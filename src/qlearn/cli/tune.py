"""`qlearn tune`: search DQN hyperparameters with Optuna, each trial scored over several seeds."""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qlearn.cli.app import app, set_option
from qlearn.errors import ConfigError

if TYPE_CHECKING:
    from qlearn.tune import StudyReport, TrialRecord


def _default_study_dir(env_id: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("studies") / f"{env_id.replace('/', '_')}_{stamp}"


def _interval_text(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def format_trial(record: TrialRecord) -> str:
    """One line per finished trial."""
    took = f" ({record.duration_s:.0f} s)" if record.duration_s is not None else ""
    if record.state == "complete":
        scores = ", ".join(f"{s:.1f}" for s in record.scores or [])
        text = f"IQM {_interval_text(record.value, record.low, record.high)} (seeds: {scores})"
    elif record.state == "pruned" and record.error is None:
        at = f" at step {record.pruned_at_step}" if record.pruned_at_step is not None else ""
        last = f", last evaluation {record.value:.2f}" if record.value is not None else ""
        text = f"pruned{at}{last}"
    else:
        text = f"{record.state}: {record.error or 'no reason recorded'}"
    return f"trial {record.number}: {text}{took}"


def format_summary(report: StudyReport, folder: Path, minutes: float) -> str:
    """The short summary printed after a study: counts, the best trial, the files written."""
    setup = report.setup
    lines = [
        f"{len(report.records)} trials on {setup.env_id} ({setup.steps} steps x "
        f"{len(setup.seeds)} seeds each): {report.count('complete')} complete, "
        f"{report.count('pruned')} pruned, {report.count('failed')} failed; "
        f"this run {minutes:.1f} min"
    ]
    best = report.best
    if best is not None:
        lines.append(
            f"best trial {best.number}: IQM {_interval_text(best.value, best.low, best.high)} "
            f"(95% bootstrap interval over seeds {', '.join(map(str, setup.seeds))})"
        )
        lines += [f"  {name} = {value!r}" for name, value in best.params.items()]
    lines += [f"note: {note}" for note in report.notes]
    lines.append("wrote " + ", ".join(str(f) for f in report.files))
    if best is not None:
        lines.append(f"train it: qlearn train {setup.env_id} --config {folder / 'best.toml'}")
    return "\n".join(lines)


@app.command()
def tune(
    env: Annotated[str | None, typer.Argument(help="Gymnasium env id, e.g. Acrobot-v1.")] = None,
    trials: Annotated[
        int | None,
        typer.Option(help="Trials in all, pruned and failed ones included (default 100)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Env steps each seed of a trial trains.")] = 50_000,
    seeds: Annotated[
        int,
        typer.Option(
            help="Seeds per trial (0, 1, ...), trained together in one process; a trial "
            "scores their IQM."
        ),
    ] = 5,
    space: Annotated[
        Path | None,
        typer.Option(
            help="TOML file that narrows the default search space, or replaces it with "
            "`include_defaults = false` (see docs/tune.md)."
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Preset the trials start from (see `qlearn presets`).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of DQNConfig fields the trials start from."),
    ] = None,
    overrides: Annotated[list[str] | None, set_option("DQNConfig", "dqn")] = None,
    study_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the study (default studies/ENV_TIMESTAMP)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the study in this folder (after a kill, or with more --trials)."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="Trials run at once: processes here, or Ray tasks in flight.")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run trials as Ray tasks on this cluster (`auto`, `HOST:PORT`, or `local`)."
        ),
    ] = None,
    timeout_minutes: Annotated[
        float | None, typer.Option(help="Start no trial after this many minutes.")
    ] = None,
    evaluations: Annotated[
        int, typer.Option(help="Periodic evaluations per seed, where the pruner may stop a trial.")
    ] = 5,
    eval_episodes: Annotated[
        int, typer.Option(help="Held-out greedy episodes that score each seed.")
    ] = 10,
    startup_trials: Annotated[
        int,
        typer.Option(help="Random trials before TPE, and unpruned ones before the pruner acts."),
    ] = 10,
    sampler_seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
) -> None:
    """Search DQN hyperparameters with Optuna; each trial is scored by the IQM over seeds.

    Multivariate TPE and median pruning; the study folder keeps the study (SQLite), the best
    config, a CSV of the trials and plots.
    """
    from qlearn.tune import (
        TuneSetup,
        check_study_folder,
        create_study,
        load_setup,
        load_space,
        run_study,
        write_report,
    )

    if timeout_minutes is not None and not timeout_minutes > 0:
        raise ConfigError(f"--timeout-minutes = {timeout_minutes!r} is invalid; allowed: > 0")
    if jobs < 1:
        raise ConfigError(f"--jobs = {jobs} is invalid; allowed: an integer >= 1")
    if resume is not None:
        given = [env, space, preset, config, overrides, study_dir]
        if any(v is not None for v in given):
            raise ConfigError(
                "--resume continues the study with its saved settings; drop ENV/--space/--preset/"
                "--config/--set/--study-dir (--trials, --jobs, --ray-address and "
                "--timeout-minutes may change)"
            )
        folder = resume
        setup = load_setup(folder)
        typer.echo(f"resuming the study in {folder} ({setup.env_id})", err=True)
    else:
        if env is None:
            raise ConfigError("give an env id (e.g. qlearn tune Acrobot-v1) or --resume STUDY_DIR")
        from qlearn.cli.dqn import build_config

        if seeds < 1:
            raise ConfigError(f"--seeds = {seeds} is invalid; allowed: an integer >= 1")
        base = build_config(preset, config, overrides)
        setup = TuneSetup(
            env_id=env,
            base=base,
            space=load_space(space),
            steps=steps,
            seeds=tuple(range(seeds)),
            evaluations=evaluations,
            eval_episodes=eval_episodes,
            trials=100 if trials is None else trials,
            sampler_seed=sampler_seed,
            startup_trials=startup_trials,
        )
        _check_env(env)
        folder = check_study_folder(study_dir or _default_study_dir(env))
        create_study(folder, setup)
        typer.echo(f"study folder: {folder}", err=True)
    began = time.monotonic()
    run_study(
        folder,
        jobs=jobs,
        timeout_s=None if timeout_minutes is None else 60.0 * timeout_minutes,
        ray_address=ray_address,
        on_trial=lambda record: typer.echo(format_trial(record), err=True),
        trials=trials,
    )
    if resume is None:
        words = ["qlearn", "tune", env, f"--trials={setup.trials}", f"--steps={steps}"]
        words += [f"--seeds={seeds}", f"--evaluations={evaluations}"]
        words += [f"--eval-episodes={eval_episodes}", f"--startup-trials={startup_trials}"]
        words += [f"--sampler-seed={sampler_seed}", f"--jobs={jobs}"]
        words += [f"--space={space}"] * (space is not None)
        words += [f"--preset={preset}"] * (preset is not None)
        words += [f"--config={config}"] * (config is not None)
        words += [f"--set={o}" for o in overrides or []]
        header = "Tuned by: " + " ".join(shlex.quote(str(w)) for w in words)
    else:
        header = f"Tuned by: the study in {folder}, resumed"
    report = write_report(folder, header=header)
    typer.echo(format_summary(report, folder, (time.monotonic() - began) / 60.0))


def _check_env(env_id: str) -> None:
    """Fail now, with one line, for an env id the trials could not make."""
    from qlearn.envs import make_env

    make_env(env_id).close()
