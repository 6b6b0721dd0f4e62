"""`qlearn tabular` (Q-learning with a Q-table) and `qlearn plan` (planning on a known model)."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qlearn.cli.app import app, progress_to_stderr, set_option, success_text
from qlearn.config import TabularConfig, check_range, parse_override
from qlearn.errors import ConfigError

if TYPE_CHECKING:
    import gymnasium as gym
    import numpy as np

    from qlearn.agents.tabular import EvalResult

PLAN_METHODS = ("value-iteration", "policy-iteration")
# FrozenLake's actions 0 left, 1 down, 2 right, 3 up, drawn in plain ASCII.
ASCII_ARROWS = "<v>^"

EnvArg = Annotated[
    str, typer.Argument(metavar="ENV", help="Gymnasium env id with Discrete spaces.")
]
EnvKwargsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env-kwarg",
        metavar="KEY=VALUE",
        help="Passed to the env, e.g. map_name=8x8 or is_slippery=false; repeatable.",
    ),
]
SlipperyOpt = Annotated[
    bool | None,
    typer.Option("--slippery/--no-slippery", help="FrozenLake's is_slippery (default: the env's)."),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png",
        help="Draw the grid world's values and policy arrows (.png, .svg or .pdf).",
    ),
]
EvalEpisodesOpt = Annotated[
    int, typer.Option("--eval-episodes", help="Greedy evaluation episodes.")
]


def env_kwargs_from(texts: list[str] | None, slippery: bool | None) -> dict[str, Any]:
    """`KEY=VALUE` strings (values read as TOML, else kept as text) plus `--[no-]slippery`."""
    kwargs: dict[str, Any] = {}
    for text in texts or []:
        if "=" not in text or not text.partition("=")[0].strip():
            raise ConfigError(
                f"--env-kwarg {text!r} is malformed; expected KEY=VALUE, e.g. is_slippery=false"
            )
        key, value = parse_override(text)
        kwargs[key] = value
    if slippery is not None:
        kwargs["is_slippery"] = slippery
    return kwargs


def check_plot_path(path: Path | None, env: gym.Env) -> None:
    """Fail before any work if `--plot` cannot be drawn: a path that cannot take the file (see
    `qlearn.plots.check_output_path`), or an env with no grid."""
    if path is None:
        return
    from qlearn.plots import check_output_path

    check_output_path(path, what="--plot")
    if grid_map(env) is None:
        raise ConfigError(
            "--plot needs a grid world with one state per map cell (env.unwrapped.desc), such "
            f"as FrozenLake-v1; {env.spec.id if env.spec else 'this env'} has none"
        )


def grid_map(env: gym.Env) -> np.ndarray | None:
    """A FrozenLake-style map, (rows, cols) letters with one state per cell, or None.

    Taxi also has a `desc`, but it is a drawing of the roads, not one cell per state.
    """
    import numpy as np

    desc = getattr(env.unwrapped, "desc", None)
    if desc is None:
        return None
    desc = np.asarray(desc)
    letters = {c.decode() if isinstance(c, bytes) else str(c) for c in desc.ravel()}
    if desc.ndim != 2 or desc.size != env.observation_space.n or not letters <= set("SFHG"):
        return None
    return desc


def policy_text(policy: np.ndarray, desc: np.ndarray) -> str:
    """The policy as rows of ASCII arrows, holes and goals shown by their letters."""
    cols = len(desc[0])
    lines = []
    for r, row in enumerate(desc):
        cells = []
        for c, cell in enumerate(row):
            letter = cell.decode() if isinstance(cell, bytes) else str(cell)
            cells.append(letter if letter in "HG" else ASCII_ARROWS[int(policy[r * cols + c])])
        lines.append("  " + " ".join(cells))
    return "\n".join(lines)


def _echo_eval(result: EvalResult, num_episodes: int, seed: int) -> None:
    typer.echo(
        f"greedy evaluation over {num_episodes} episodes (seed {seed}): mean return "
        f"{result.mean_return:.3f} +/- {result.std_return:.3f}{success_text(result)}, "
        f"mean length {result.mean_length:.1f}"
    )


def _echo_grid(
    env: gym.Env, values: np.ndarray, policy: np.ndarray, plot: Path | None, title: str
) -> None:
    desc = grid_map(env)
    if desc is not None:
        typer.echo("greedy policy:\n" + policy_text(policy, desc))
    if plot is not None:
        from qlearn.plots import plot_value_grid

        plot_value_grid(values, desc, plot, policy=policy, title=title)
        typer.echo(f"wrote {plot}")


@app.command("tabular")
def tabular(
    env: EnvArg,
    episodes: Annotated[
        int | None, typer.Option("--episodes", help="Training episodes (default: num_episodes).")
    ] = None,
    overrides: Annotated[list[str] | None, set_option("TabularConfig", "tabular")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML file of TabularConfig fields (see `qlearn settings tabular`)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of env and RNG.")] = None,
    eval_episodes: EvalEpisodesOpt = 1_000,
    env_kwarg: EnvKwargsOpt = None,
    slippery: SlipperyOpt = None,
    plot: PlotOpt = None,
    progress: Annotated[
        bool,
        typer.Option(help="Show progress on stderr: a bar on a terminal, else a line per 10%."),
    ] = True,
) -> None:
    """Train a Q-table with Q-learning, then evaluate its greedy policy.

    A success rate is shown only for envs that end at a goal (FrozenLake, CliffWalking, Taxi).
    """
    from qlearn.agents.tabular import EpisodeMetrics, TabularQAgent

    cfg = TabularConfig.from_toml(config) if config is not None else TabularConfig()
    cfg = cfg.with_overrides(overrides or [])
    if episodes is not None:
        cfg = cfg.replace(num_episodes=episodes)
    if seed is not None:
        cfg = cfg.replace(seed=seed)
    check_range("eval_episodes", eval_episodes, 1)
    agent = TabularQAgent(env, cfg, **env_kwargs_from(env_kwarg, slippery))
    check_plot_path(plot, agent.env)
    typer.echo(
        f"{env}: {agent.num_states} states, {agent.num_actions} actions; Q-learning for "
        f"{cfg.num_episodes} episodes (alpha {cfg.alpha:g}, gamma {cfg.gamma:g}, "
        f"{cfg.exploration}, seed {cfg.seed})"
    )
    start = time.perf_counter()
    output = progress_to_stderr(progress)
    bar = output.start(cfg.num_episodes, unit="episode", leave=False) if output else None
    recent: collections.deque[float] = collections.deque(maxlen=100)

    def on_episode(m: EpisodeMetrics) -> None:
        assert bar is not None
        recent.append(m.episode_return)
        # A fresh agent: its episode index counts this run's episodes from 0.
        bar.update(m.episode + 1, {"return (last 100)": sum(recent) / len(recent)})

    try:
        metrics = agent.learn(callback=on_episode if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    tail = metrics.episode_returns[-100:]
    typer.echo(
        f"trained {cfg.num_episodes} episodes, {int(metrics.episode_lengths.sum())} steps in "
        f"{time.perf_counter() - start:.1f}s; mean return of the last {len(tail)} episodes "
        f"{tail.mean():.3f}"
    )
    eval_seed = cfg.seed + 1
    _echo_eval(agent.evaluate(eval_episodes, seed=eval_seed), eval_episodes, eval_seed)
    _echo_grid(
        agent.env,
        agent.q_table.max(axis=1),
        agent.greedy_policy(),
        plot,
        f"{env}: Q-learning, max_a Q(s, a) and greedy actions",
    )


@app.command("plan")
def plan(
    env: EnvArg,
    method: Annotated[
        str, typer.Option("--method", help="value-iteration or policy-iteration.")
    ] = "value-iteration",
    gamma: Annotated[float, typer.Option("--gamma", help="Discount, in [0, 1].")] = 0.99,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Value iteration's stopping change.")
    ] = 1e-8,
    max_sweeps: Annotated[
        int, typer.Option("--max-sweeps", help="Value iteration's most sweeps.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the evaluation episodes.")] = 0,
    eval_episodes: EvalEpisodesOpt = 1_000,
    env_kwarg: EnvKwargsOpt = None,
    slippery: SlipperyOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Plan on the env's known model (toy-text envs), then evaluate the greedy policy."""
    from qlearn.agents.tabular import evaluate_policy, make_tabular_env
    from qlearn.planning import TabularMDP, policy_iteration, value_iteration

    if method not in PLAN_METHODS:
        raise ConfigError(f"--method {method!r} is invalid; allowed: {', '.join(PLAN_METHODS)}")
    check_range("gamma", gamma, 0, 1)
    check_range("eval_episodes", eval_episodes, 1)
    check_range("seed", seed, 0)
    gym_env = make_tabular_env(env, **env_kwargs_from(env_kwarg, slippery))
    check_plot_path(plot, gym_env)
    mdp = TabularMDP.from_env(gym_env)
    typer.echo(
        f"{env}: {mdp.num_states} states, {mdp.num_actions} actions, "
        f"{int(mdp.terminal.sum())} terminal"
    )
    start = time.perf_counter()
    if method == "value-iteration":
        result: Any = value_iteration(mdp, gamma, tolerance=tolerance, max_sweeps=max_sweeps)
        done = f"converged in {result.num_sweeps} sweeps (tolerance {tolerance:g})"
    else:
        result = policy_iteration(mdp, gamma)
        done = f"stable after {result.num_iterations} policy evaluations"
    typer.echo(f"{method} with gamma {gamma:g} {done}, {time.perf_counter() - start:.2f}s")
    _echo_eval(
        evaluate_policy(gym_env, result.policy, num_episodes=eval_episodes, seed=seed),
        eval_episodes,
        seed,
    )
    _echo_grid(gym_env, result.values, result.policy, plot, f"{env}: {method}, gamma {gamma:g}")
