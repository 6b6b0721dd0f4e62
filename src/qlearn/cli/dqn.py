"""`qlearn train`, `eval`, `play`, `plot` and `presets`: the DQN commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from qlearn.cli.app import app, progress_to_stderr, set_option, success_text
from qlearn.config import DQNConfig
from qlearn.errors import ConfigError
from qlearn.evaluation import check_seed


def _default_run_dir(env_id: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id.replace('/', '_')}_s{seed}_{stamp}"


def build_config(
    preset: str | None, config_file: Path | None, overrides: list[str] | None
) -> DQNConfig:
    """Defaults, then the preset, then the TOML file, then `--set` overrides, in that order."""
    from qlearn.presets import load_preset

    config = load_preset(preset) if preset else DQNConfig()
    if config_file is not None:
        config = DQNConfig.from_toml(config_file, base=config)
    return config.with_overrides(overrides or [])


@app.command()
def train(
    env: Annotated[str | None, typer.Argument(help="Gymnasium env id, e.g. CartPole-v1.")] = None,
    preset: Annotated[str | None, typer.Option(help="Tuned preset (see `qlearn presets`).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of DQNConfig fields (see `qlearn settings`)."),
    ] = None,
    overrides: Annotated[list[str] | None, set_option("DQNConfig", "dqn")] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Env steps of the run; sets total_steps, which the schedules span."),
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where logs and checkpoints go.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run dir from its newest checkpoint.")
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(help="Show progress on stderr: a bar on a terminal, else a line per 10%."),
    ] = True,
    distributed: Annotated[
        bool, typer.Option(help="Ape-X on Ray: actors, replay shards and one learner.")
    ] = False,
    actors: Annotated[int, typer.Option(min=1, help="Actors of a --distributed run.")] = 2,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster a --distributed run joins (default: a local one)."),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            help="Train this many seeds (seed, seed+1, ...) together in one process; the run "
            "dir gets one run dir per seed and `qlearn eval`/`plot` summarise them."
        ),
    ] = None,
) -> None:
    """Train a DQN and evaluate it; the run dir keeps config, logs and checkpoints."""
    from qlearn.cli.seeds import check_seeds_option, train_seeds
    from qlearn.distributed import ApeX, DistributedConfig, is_distributed_run
    from qlearn.run_dirs import is_multi_seed_run
    from qlearn.train import DQN

    check_seeds_option(seeds)
    if seeds is not None and distributed:
        raise ConfigError(
            "--seeds and --distributed do not combine yet; train the seeds in one process "
            "(--seeds) or one seed on Ray (--distributed)"
        )
    if resume is not None and seeds is not None:
        raise ConfigError("--resume continues a run with the seeds it has; drop --seeds")
    if resume is not None and is_multi_seed_run(resume):
        if env or preset or config or overrides or steps is not None or run_dir is not None:
            raise ConfigError(
                "--resume continues the run with its saved config, seeds, total steps and run "
                "dir; drop ENV/--preset/--config/--set/--steps/--run-dir"
            )
        train_seeds(None, None, 0, None, resume, progress)
        return
    if seeds is not None:
        if env is None:
            raise ConfigError("give an env id (e.g. qlearn train CartPole-v1 --seeds 16)")
        steps_override = [f"total_steps={steps}"] if steps is not None else []
        cfg = build_config(preset, config, [*(overrides or []), *steps_override])
        train_seeds(env, cfg, seeds, run_dir, None, progress)
        return

    runner: DQN | ApeX

    if resume is not None:
        if env or preset or config or overrides or steps is not None or run_dir is not None:
            raise ConfigError(
                "--resume continues the run with its saved config, total steps and run dir; "
                "drop ENV/--preset/--config/--set/--steps/--run-dir"
            )
        if is_distributed_run(resume):
            runner = ApeX.resume(
                resume, progress=progress_to_stderr(progress), ray_address=ray_address
            )
        else:
            runner = DQN.resume(resume, progress=progress_to_stderr(progress))
        typer.echo(f"resuming {resume} at step {runner.counters.step}", err=True)
    else:
        if env is None:
            raise ConfigError("give an env id (e.g. qlearn train CartPole-v1) or --resume RUN_DIR")
        # --steps goes in with the --set overrides (and wins over a total_steps there), so
        # fields checked against total_steps (num_envs) see the budget actually asked for.
        steps_override = [f"total_steps={steps}"] if steps is not None else []
        cfg = build_config(preset, config, [*(overrides or []), *steps_override])
        run_dir = run_dir or _default_run_dir(env, cfg.seed)
        if distributed:
            dist = DistributedConfig(num_actors=actors)
            runner = ApeX(
                env,
                cfg,
                dist,
                run_dir=run_dir,
                progress=progress_to_stderr(progress),
                ray_address=ray_address,
            )
        else:
            runner = DQN(env, cfg, run_dir=run_dir, progress=progress_to_stderr(progress))
    agent = runner.learn()  # until total_steps, or a resumed run's recorded target
    episodes = agent.config.eval_episodes
    typer.echo(f"trained {agent.counters.step} steps in {agent.counters.wall_time:.1f}s")
    # DQN's last network is often worse than its best; report both, as `qlearn eval` uses best.
    # Both on held-out episodes (evaluate's default seed): `best` was chosen on the periodic ones.
    models = [("final", agent)]
    best_dir = agent.run_dir / "best" if agent.run_dir is not None else None
    if best_dir is not None and best_dir.is_dir():
        models.append(("best", DQN.load(best_dir)))
    for name, model in models:
        result = model.evaluate(episodes)
        typer.echo(
            f"{name} model, greedy evaluation over {episodes} episodes: mean return "
            f"{result.mean_return:.2f} +/- {result.std_return:.2f}{success_text(result)}"
        )
    typer.echo(f"run dir: {agent.run_dir}")


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run dir or a checkpoint dir.")],
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes.")] = 20,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the first episode, >= 0 (default: held-out episodes, which no periodic "
            "evaluation during training used)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a trained agent greedily (its best model, else final).

    A success rate is shown only for envs that end at a goal (FrozenLake, CliffWalking, Taxi).
    """
    from qlearn.run_dirs import is_multi_seed_run
    from qlearn.train import DQN

    if seed is not None:
        check_seed(seed, "--seed")
    if is_multi_seed_run(run_dir):
        from qlearn.cli.seeds import eval_seeds

        if seed is not None:
            raise ConfigError("--seed applies to one run; a multi-seed run uses held-out seeds")
        eval_seeds(run_dir, episodes, json_out)
        return
    agent = DQN.load(run_dir)
    result = agent.evaluate(episodes, seed=seed)
    if json_out:
        goal = {"goal": result.goal} if result.goal is not None else {}
        typer.echo(json.dumps({**result.summary(), **goal, "returns": result.returns.tolist()}))
    else:
        typer.echo(
            f"{agent.env_id}: mean return {result.mean_return:.2f} +/- "
            f"{result.std_return:.2f} over {episodes} episodes "
            f"(min {result.returns.min():.1f}, max {result.returns.max():.1f})"
            f"{success_text(result)}"
        )


@app.command()
def play(
    run_dir: Annotated[Path, typer.Argument(help="A run dir or a checkpoint dir.")],
    gif: Annotated[Path, typer.Option(help="Write the episodes to this .gif file.")],
    episodes: Annotated[int, typer.Option(min=1)] = 1,
    fps: Annotated[int, typer.Option(min=1, max=100)] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the first episode, >= 0.")] = 0,
) -> None:
    """Record a trained agent playing greedily, as a GIF of rgb_array frames."""
    from qlearn.plots import GIF_FORMATS, check_output_path, write_gif
    from qlearn.train import DQN, run_episodes

    # Before loading and playing: a path the GIF cannot go to fails now, not after the work.
    check_output_path(gif, GIF_FORMATS, "--gif")
    check_seed(seed, "--seed")
    from qlearn.cli.seeds import refuse_parent

    refuse_parent(run_dir, "play")
    agent = DQN.load(run_dir)
    env = agent.make_eval_env(render_mode="rgb_array")
    frames: list = []
    result = run_episodes(env, agent.predict, episodes, seed, on_frame=frames.append)
    env.close()
    written = write_gif(frames, gif, fps=fps)
    typer.echo(f"wrote {written} ({len(frames)} frames, returns {result.returns.tolist()})")


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run dir.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="File to write, .png, .svg or .pdf (default RUN_DIR/learning_curve.png)."
        ),
    ] = None,
) -> None:
    """Draw the learning curve (episode returns and evaluations) as a PNG, SVG or PDF."""
    from qlearn.plots import PLOT_FORMATS, check_output_path, learning_curve
    from qlearn.run_dirs import is_multi_seed_run

    out = check_output_path(out, PLOT_FORMATS, "--out") if out is not None else None
    if is_multi_seed_run(run_dir):
        from qlearn.cli.seeds import plot_seeds

        plot_seeds(run_dir, out)
        return
    path = learning_curve(run_dir, out or run_dir / "learning_curve.png")
    typer.echo(f"wrote {path}")


@app.command()
def presets(
    name: Annotated[str | None, typer.Argument(help="Show this preset's TOML.")] = None,
) -> None:
    """List the tuned presets, or show one."""
    from qlearn.presets import preset_names, preset_text

    if name is None:
        for n in preset_names():
            typer.echo(n)
    else:
        typer.echo(preset_text(name))
