"""Many seeds: `qlearn train --seeds N`, `eval`/`plot` of a multi-seed run dir, `compare`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from qlearn.cli.app import app, progress_to_stderr
from qlearn.config import DQNConfig
from qlearn.errors import ConfigError


def _default_parent_dir(env_id: str, seed: int, num_seeds: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id.replace('/', '_')}_s{seed}x{num_seeds}_{stamp}"


def _print_summary(title: str, summary: object) -> None:
    from qlearn.report import Summary, format_interval

    assert isinstance(summary, Summary)
    typer.echo(title)
    typer.echo(f"  IQM  {format_interval(summary.iqm)}   (95% stratified bootstrap interval)")
    typer.echo(f"  mean {format_interval(summary.mean)}")
    if summary.fraction_solved is not None:
        solved = round(summary.fraction_solved * summary.num_runs)
        typer.echo(
            f"  solved (>= {summary.reward_threshold:g}): {solved}/{summary.num_runs} seeds "
            f"({summary.fraction_solved:.0%})"
        )


def train_seeds(
    env: str | None,
    config: DQNConfig | None,
    num_seeds: int,
    run_dir: Path | None,
    resume: Path | None,
    progress: bool,
) -> None:
    """`qlearn train ENV --seeds N` and `qlearn train --resume PARENT`."""
    from qlearn.report import summarize
    from qlearn.train.multi_seed import MultiSeedDQN

    if resume is not None:
        runs = MultiSeedDQN.resume(resume, progress=progress_to_stderr(progress))
        typer.echo(
            f"resuming {resume} ({runs.num_seeds} seeds) at step {runs.counters.step}", err=True
        )
    else:
        assert env is not None and config is not None
        run_dir = run_dir or _default_parent_dir(env, config.seed, num_seeds)
        runs = MultiSeedDQN(
            env, config, num_seeds, run_dir=run_dir, progress=progress_to_stderr(progress)
        )
    runs.learn()
    typer.echo(
        f"trained {runs.num_seeds} seeds ({', '.join(map(str, runs.seeds))}) for "
        f"{runs.counters.step} steps each in {runs.counters.wall_time:.1f}s"
    )
    results = runs.evaluate(runs.config.eval_episodes)
    scores = [r.mean_return for r in results]
    _print_summary(
        f"final models, greedy evaluation over {runs.config.eval_episodes} held-out episodes "
        "per seed:",
        summarize(scores, runs.reward_threshold),
    )
    typer.echo(f"run dir: {runs.run_dir} (one run dir per seed inside; `qlearn eval` it)")


def eval_seeds(run_dir: Path, episodes: int, json_out: bool) -> None:
    """`qlearn eval PARENT`: every seed's best model on its held-out episodes, summarised."""
    from qlearn.report import summarize
    from qlearn.run_dirs import read_multi_seed_info, seed_dir_name
    from qlearn.train import DQN

    info = read_multi_seed_info(run_dir)
    scores = []
    for seed in info["seeds"]:
        agent = DQN.load(run_dir / seed_dir_name(seed))
        scores.append(agent.evaluate(episodes).mean_return)
    threshold = info.get("reward_threshold")
    summary = summarize(scores, threshold)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "env_id": info.get("env_id"),
                    "seeds": info["seeds"],
                    "scores": scores,
                    "episodes": episodes,
                    **summary.to_dict(),
                }
            )
        )
        return
    _print_summary(
        f"{info.get('env_id')}: best model of each of {len(scores)} seeds, greedy evaluation "
        f"over {episodes} held-out episodes each:",
        summary,
    )
    typer.echo(
        "  per seed: "
        + ", ".join(f"{s}: {v:.1f}" for s, v in zip(info["seeds"], scores, strict=True))
    )


def plot_seeds(run_dir: Path, out: Path | None) -> None:
    """`qlearn plot PARENT`: IQM learning curve with its band, and the performance profile."""
    from qlearn.report import load_seed_runs, write_figure

    path = write_figure([load_seed_runs(run_dir)], out or run_dir / "seeds.png")
    typer.echo(f"wrote {path}")


@app.command()
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Multi-seed run dirs (`qlearn train ENV --seeds N`).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Figure to write, .png, .svg or .pdf (default: no figure)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Compare multi-seed runs: IQM and mean of the final evaluations with 95% bootstrap
    intervals, the share of seeds solved, and P(a seed of each run beats a seed of the first)."""
    from qlearn.plots import check_output_path
    from qlearn.report import compare as compare_runs
    from qlearn.report import format_interval, load_seed_runs, write_figure

    if out is not None:
        check_output_path(out, what="--out")
    loaded = [load_seed_runs(path) for path in runs]
    comparison = compare_runs(loaded)
    if json_out:
        typer.echo(json.dumps(comparison.to_dict()))
    else:
        typer.echo(
            "final periodic evaluation of each seed; 95% stratified bootstrap intervals; "
            "P(improvement) is P(a seed of the run beats a seed of the first run)"
        )
        header = f"{'run':<28} {'seeds':>5}  {'IQM':<26} {'mean':<26} {'solved':>7}  P(improvement)"
        typer.echo(header)
        for name, summary, p in zip(
            comparison.names, comparison.summaries, comparison.improvement, strict=True
        ):
            solved = "-" if summary.fraction_solved is None else f"{summary.fraction_solved:.0%}"
            improvement = "-" if p is None else f"{p.estimate:.2f} [{p.low:.2f}, {p.high:.2f}]"
            typer.echo(
                f"{name[:28]:<28} {summary.num_runs:>5}  {format_interval(summary.iqm):<26} "
                f"{format_interval(summary.mean):<26} {solved:>7}  {improvement}"
            )
    if out is not None:
        typer.echo(f"wrote {write_figure(loaded, out)}")


def check_seeds_option(seeds: int | None) -> None:
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds} is invalid; allowed: an integer >= 1")


def refuse_parent(run_dir: Path, command: str) -> None:
    """ConfigError for a multi-seed run dir given to a command that takes one run."""
    from qlearn.run_dirs import is_multi_seed_run, read_multi_seed_info, seed_dir_name

    if is_multi_seed_run(run_dir):
        first = seed_dir_name(read_multi_seed_info(run_dir)["seeds"][0])
        raise ConfigError(
            f"{str(run_dir)!r} is a multi-seed run dir; `qlearn {command}` takes one seed's run "
            f"dir, e.g. {str(run_dir / first)!r}"
        )
